#!/usr/bin/env bash
# The project's test command (README: ./scripts/test.sh). Works from any directory.
#
#   ./scripts/test.sh                          # everything
#   ./scripts/test.sh --filter 'FullyQualifiedName~Lz4'   # extra args go to `dotnet test`
#
# 1. installs the system tools the tests need when they are missing (root only; apt),
# 2. builds the solution once in Release,
# 3. runs every test project with a TRX logger plus the console logger,
# 4. sums the TRX counters and prints, as the very last line, `N passed, N failed`
#    (`, N skipped` is appended only when tests were not executed).
# Exit status: 0 only when the build and `dotnet test` succeeded and no test failed.
# Environment: TEST_RESULTS_DIR (default <repo>/TestResults/test-sh, wiped on each run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
# Admin tools (mkfs.ext4, losetup) live in sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

RESULTS="${TEST_RESULTS_DIR:-$ROOT/TestResults/test-sh}"

# "command package" pairs: the package is installed when the command is missing.
# Add here whatever a new test needs from Debian.
REQUIRED=(
  "mkfs.ext4 e2fsprogs"   # TestKit DiskImages.RealisticExt4
  "losetup util-linux"    # TestKit LoopDevice; also mount, umount and fsfreeze (PointInTimeTests)
  "mkfs.xfs xfsprogs"     # TestKit MountedFilesystem.XfsWithReflink: reflink clones (PointInTimeTests)
  # IntegrationTests Fixtures/RgwServer via scripts/rgw/start-rgw.sh: a single-node Ceph + RADOS
  # Gateway as the local S3 server (about 60 MB download, 240 MB installed, no daemon started)
  "radosgw radosgw"       # also brings radosgw-admin, ceph (ceph-common), monmaptool
  "ceph-mon ceph-mon"
  "ceph-osd ceph-osd"
  "curl curl"             # start-rgw.sh readiness probe (SigV4-signed request)
  "uuidgen uuid-runtime"  # start-rgw.sh cluster and OSD ids
  # BlockRepl.Nbd.Tests: real NBD servers and the images they serve
  "qemu-nbd qemu-utils"   # also qemu-img (images, bitmaps) and qemu-io (writes at known offsets)
  "nbdkit nbdkit"         # file plugin with the error, delay and blocksize-policy filters
  # qcow2:/qmp: sources (dirty bitmaps, checkpoints, fleecing) and the stand-in for a running VM
  "qemu-storage-daemon qemu-system-common"
  "nbdcopy libnbd-bin"    # the peer in benchmarks/e2e/nbd.sh and a cross-check in tests
  "systemd-analyze systemd"  # DaemonTests: packaging/systemd/blockrepl.service is checked with `systemd-analyze verify`
)

# tests/ebs-js: the official AWS SDK for JavaScript EBS client, run by BlockRepl.Ebs.Endpoint.Tests
# against the endpoint. Installed from the lock file (npm ci) when node_modules is missing; without
# node or npm the test is skipped with its reason, not failed.
install_ebs_js() {
  local dir="$ROOT/tests/ebs-js"
  [ -f "$dir/package-lock.json" ] || return 0
  [ -d "$dir/node_modules/@aws-sdk/client-ebs" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then
    warn "npm not found: the @aws-sdk/client-ebs cross-check (tests/ebs-js) will be skipped"
    return 0
  fi
  log "installing tests/ebs-js (npm ci)"
  if ! npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error; then
    warn "npm ci in tests/ebs-js failed: the @aws-sdk/client-ebs cross-check will be skipped"
  fi
}

log() { printf '==> %s\n' "$*"; }
err() { printf 'error: %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }

passed=0 failed=0 skipped=0
summary_printed=0

# Sums the <Counters .../> of every TRX file under $RESULTS into passed/failed/skipped.
# error, timeout and aborted results count as failed, and so does a run that aborted (crashed
# test host); tests not executed count as skipped.
sum_trx() {
  passed=0 failed=0 skipped=0
  local trx counters attr value outcome
  [ -d "$RESULTS" ] || return 0
  while IFS= read -r -d '' trx; do
    counters="$(grep -o '<Counters [^>]*>' "$trx" | head -n 1 || true)"
    if [ -z "$counters" ]; then
      err "no <Counters> element in $trx (test run interrupted?)"
      failed=$((failed + 1))
      continue
    fi
    local -A c=()
    for attr in total executed passed failed error timeout aborted notExecuted; do
      value="$(printf '%s' "$counters" | sed -n "s/.* $attr=\"\([0-9]*\)\".*/\1/p")"
      c[$attr]="${value:-0}"
    done
    passed=$((passed + c[passed]))
    value=$((c[failed] + c[error] + c[timeout] + c[aborted]))
    outcome="$(grep -o '<ResultSummary outcome="[A-Za-z]*"' "$trx" | head -n 1 | sed 's/.*outcome="\(.*\)"/\1/' || true)"
    case "$outcome" in
      Completed|Passed|Warning|"") ;;
      *)
        # A crashed test host leaves outcome="Failed" with zeroed counters: count the run as one failure.
        if [ "$value" -eq 0 ]; then
          err "test run recorded in $(basename "$trx") ended with outcome '$outcome' (test host crashed?)"
          value=1
        fi
        ;;
    esac
    failed=$((failed + value))
    # xunit's skipped tests appear as results with outcome NotExecuted but are not counted in
    # notExecuted, only missing from executed; take whichever is larger.
    value=$((c[total] - c[executed]))
    if [ "${c[notExecuted]}" -gt "$value" ]; then value="${c[notExecuted]}"; fi
    skipped=$((skipped + value))
  done < <(find "$RESULTS" -name '*.trx' -type f -print0)
}

# Prints the counts line; `--no-sum` reuses the counters of the last sum_trx.
print_summary() {
  summary_printed=1
  if [ "${1:-}" != "--no-sum" ]; then sum_trx; fi
  local line="$passed passed, $failed failed"
  if [ "$skipped" -gt 0 ]; then line="$line, $skipped skipped"; fi
  printf '%s\n' "$line"
}

# Whatever happens (install or build failure, Ctrl-C), the counts line is the last thing printed.
# shellcheck disable=SC2317  # invoked by the EXIT trap
on_exit() {
  local rc=$?
  if [ "$summary_printed" -eq 0 ]; then
    err "scripts/test.sh stopped early (exit $rc) before the tests completed"
    print_summary
  fi
  exit "$rc"
}
trap on_exit EXIT

install_missing() {
  local missing=() entry cmd pkg
  for entry in "${REQUIRED[@]}"; do
    read -r cmd pkg <<<"$entry"
    if command -v "$cmd" >/dev/null 2>&1; then continue; fi
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ]; then
      warn "package $pkg is installed but provides no '$cmd' on PATH; not reinstalling"
      continue
    fi
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  done
  [ "${#missing[@]}" -eq 0 ] && return 0

  if [ "$(id -u)" -ne 0 ]; then
    err "the tests need these Debian packages, which are missing: ${missing[*]}"
    err "install them (sudo apt-get install -y --no-install-recommends ${missing[*]}) or run this script as root"
    exit 2
  fi
  log "installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

if ! command -v dotnet >/dev/null 2>&1; then
  err "dotnet not found: install the .NET 10 SDK (https://dot.net) and put it on PATH"
  exit 2
fi

# Wiped first, so that the summary of a run that stops early never counts an older run's results.
rm -rf "$RESULTS"

install_missing
install_ebs_js

log "building BlockRepl.sln (Release)"
mkdir -p "$RESULTS"
# -nodeReuse:false: no MSBuild worker outlives the script (and holds CI's output pipe open).
if ! dotnet build BlockRepl.sln -c Release -nodeReuse:false; then
  err "build failed"
  exit 1
fi

log "running tests (TRX results in $RESULTS)"
test_rc=0
dotnet test BlockRepl.sln -c Release --no-build \
  --logger "trx;LogFilePrefix=results" \
  --logger "console;verbosity=normal" \
  --results-directory "$RESULTS" \
  "$@" || test_rc=$?

sum_trx
rc=0
if [ "$failed" -gt 0 ]; then
  rc=1
elif [ "$test_rc" -ne 0 ]; then
  # Nothing failed in the TRX files, yet dotnet test failed: a crashed test host, a bad argument
  # or a project that could not run. Never report that as green.
  err "dotnet test exited with code $test_rc although no test failed (crash or usage error; see above)"
  rc="$test_rc"
fi
print_summary --no-sum
exit "$rc"
