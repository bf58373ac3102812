#!/usr/bin/env bash
# End-to-end comparison of blockrepl against restic on a realistic disk image, both in one run
# (host noise moves whole-program numbers by ±30 %, so only same-run ratios are meaningful; see
# /work/shared/ref/perf.md §1 and §4).
#
#   benchmarks/e2e/run.sh                    # 2 GiB image, warm page cache
#   SIZE=4G COLD=1 benchmarks/e2e/run.sh     # perf.md §4.1 size, caches dropped before each step
#
# Steps, per tool (interleaved, so both see the same machine state):
#   init (restic; blockrepl only if its CLI has an `init` command), full backup,
#   [the change: CHANGE_PCT % of the volume as CHANGE_BLOCK-aligned seeded random overwrites, once],
#   incremental backup, restore of latest to a new file + cmp against the image.
# Each timed step runs under /usr/bin/time -f '%e %U %S %M'.
#
# Environment (defaults in brackets):
#   SIZE [2G]           image size, IEC suffixes allowed (2G = 2 GiB); multiple of 4096
#   FILL_PCT [60]       percent of the image filled with real files from /usr
#   CHANGE_PCT [1]      percent of the volume's CHANGE_BLOCK blocks overwritten between the backups
#   CHANGE_BLOCK [65536] size and alignment of each overwrite
#   SEED [42]           seed of the change set
#   COLD [0]            1: sync + drop caches before each timed step (root only); 0: image pre-read
#   BENCH_DIR [<repo>/.work/bench]  work dir (image cache, repos, restores, logs);
#                       needs about (3 + number of tools) × SIZE + 1 GiB free
#   TOOLS ["blockrepl restic"]     subset to run
#   REBUILD_IMAGE [0]   1: rebuild the cached pristine image even if present
#   BLOCKREPL [built]   command to run blockrepl (default: src/BlockRepl.Cli published with ReadyToRun)
#   R2R [1]             0: use the plain `dotnet build` output instead of the ReadyToRun publish
#   OUT [benchmarks/e2e/last-run.md]  where the report is written (also printed)
# Exit status: nonzero when a step of either tool failed or a restore differs from the volume
# (the report is still written, with the failure in its note column).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CALLER_PWD="$PWD"
cd "$ROOT"

SIZE="${SIZE:-2G}"
FILL_PCT="${FILL_PCT:-60}"
CHANGE_PCT="${CHANGE_PCT:-1}"
CHANGE_BLOCK="${CHANGE_BLOCK:-65536}"
SEED="${SEED:-42}"
COLD="${COLD:-0}"
BENCH_DIR="${BENCH_DIR:-$ROOT/.work/bench}"
TOOLS="${TOOLS:-blockrepl restic}"
REBUILD_IMAGE="${REBUILD_IMAGE:-0}"
OUT="${OUT:-$ROOT/benchmarks/e2e/last-run.md}"
# Relative paths are meant relative to where the script was started, not the repo root.
case "$BENCH_DIR" in /*) ;; *) BENCH_DIR="$CALLER_PWD/$BENCH_DIR" ;; esac
case "$OUT" in /*) ;; *) OUT="$CALLER_PWD/$OUT" ;; esac

export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
export LC_ALL=C   # awk/printf decimals with a dot, whatever the caller's locale
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------------------------------------
# Parameters

SIZE_BYTES="$(numfmt --from=iec "${SIZE%iB}" 2>/dev/null)" || die "SIZE='$SIZE' is not a size (examples: 2G, 512M, 4294967296)"
[ "$SIZE_BYTES" -ge $((64 << 20)) ] || die "SIZE must be at least 64M (got $SIZE)"
[ $((SIZE_BYTES % 4096)) -eq 0 ] || die "SIZE must be a multiple of 4096 (got $SIZE_BYTES bytes)"
case "$FILL_PCT" in ''|*[!0-9]*) die "FILL_PCT must be an integer percentage";; esac
[ "$FILL_PCT" -le 85 ] || die "FILL_PCT above 85 does not fit in ext4 next to its metadata"
FILL_BYTES=$((SIZE_BYTES * FILL_PCT / 100 / 4096 * 4096))
CHANGE_FRACTION="$(awk -v p="$CHANGE_PCT" 'BEGIN { printf "%.6f", p / 100 }')"
[ "$COLD" = 1 ] && ! is_root && { warn "COLD=1 needs root to drop caches; running warm instead"; COLD=0; }
for t in $TOOLS; do
  case "$t" in blockrepl|restic) ;; *) die "unknown tool '$t' in TOOLS (known: blockrepl restic)";; esac
done

# Taken now: the report rewrites last-run.md, which would make the tree look dirty.
COMMIT_DESC="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- src native-interop 2>/dev/null || COMMIT_DESC="$COMMIT_DESC + uncommitted changes in src/"

# ---------------------------------------------------------------------------------------------
# Prerequisites: Debian packages (root installs them), the blockrepl CLI and the image tool.

ensure_packages() { # ensure_packages "cmd pkg" ...
  local missing=() entry cmd pkg
  for entry in "$@"; do
    read -r cmd pkg <<<"$entry"
    if [ "${cmd#/}" != "$cmd" ]; then [ -x "$cmd" ] && continue; else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  is_root || die "missing Debian packages: ${missing[*]} (install them: sudo apt-get install -y ${missing[*]})"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

needed=("/usr/bin/time time" "mkfs.ext4 e2fsprogs" "cmp diffutils" "numfmt coreutils")
case " $TOOLS " in *" restic "*) needed+=("restic restic");; esac
ensure_packages "${needed[@]}"
command -v dotnet >/dev/null 2>&1 || die "dotnet not found: install the .NET 10 SDK"

log "building imagetool and (if needed) the blockrepl CLI in Release"
dotnet build benchmarks/e2e/imagetool -c Release -nodeReuse:false -v quiet -nologo >&2 \
  || die "could not build benchmarks/e2e/imagetool (it needs tests/BlockRepl.TestKit)"
IMAGETOOL="$ROOT/benchmarks/e2e/imagetool/bin/Release/net10.0/imagetool.dll"

BLOCKREPL_CMD=()
if [[ " $TOOLS " == *" blockrepl "* ]]; then
  if [ -n "${BLOCKREPL:-}" ]; then
    read -r -a BLOCKREPL_CMD <<<"$BLOCKREPL"
  else
    # The deployed form: `dotnet publish` with ReadyToRun (README), which saves ~0.15 s of JIT per run.
    # R2R=0 measures the plain `dotnet build` output instead.
    if [ "${R2R:-1}" = 1 ]; then
      cli_dir="$BENCH_DIR/blockrepl-publish"
      dotnet publish src/BlockRepl.Cli -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true \
        -o "$cli_dir" -nodeReuse:false -v quiet -nologo >&2 \
        || die "could not publish src/BlockRepl.Cli (R2R=0 uses the plain build)"
    else
      dotnet build src/BlockRepl.Cli -c Release -nodeReuse:false -v quiet -nologo >&2 \
        || die "could not build src/BlockRepl.Cli in Release (see the errors above); TOOLS=restic runs the baseline alone"
      cli_dir="$ROOT/src/BlockRepl.Cli/bin/Release/net10.0"
    fi
    if [ -x "$cli_dir/blockrepl" ]; then
      BLOCKREPL_CMD=("$cli_dir/blockrepl")       # the apphost: no extra `dotnet` muxer process
    elif [ -f "$cli_dir/blockrepl.dll" ]; then
      BLOCKREPL_CMD=(dotnet "$cli_dir/blockrepl.dll")
    else
      die "built src/BlockRepl.Cli but found no $cli_dir/blockrepl.dll; is AssemblyName still 'blockrepl'?"
    fi
  fi
fi
blockrepl() { "${BLOCKREPL_CMD[@]}" "$@"; }

# restic: a password is always given through the environment, which every version accepts
# (--insecure-no-password only exists from 0.17; Debian bookworm ships 0.14).
export RESTIC_PASSWORD="blockrepl-bench"
RESTIC_HOST="blockrepl-bench"     # fixed, so the incremental finds its parent snapshot

# ---------------------------------------------------------------------------------------------
# Work dir and image

mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
LOGS="$BENCH_DIR/logs"
PRISTINE="$BENCH_DIR/image-${SIZE_BYTES}-fill${FILL_PCT}.img"
IMG="$BENCH_DIR/volume.img"
# Both tools keep local state between runs (restic: its cache; blockrepl: its change-tracking state
# dir); both start empty and live in the work dir, so no earlier run leaks into this one.
export RESTIC_CACHE_DIR="$BENCH_DIR/restic-cache"
export BLOCKREPL_STATE_DIR="$BENCH_DIR/blockrepl-state"

# Leftovers of an earlier run (repos, restores, logs, state); the pristine image is kept as a cache.
rm -rf "$LOGS" "$BENCH_DIR"/repo-* "$BENCH_DIR"/restore-* "$RESTIC_CACHE_DIR" "$BLOCKREPL_STATE_DIR" "$IMG"
mkdir -p "$LOGS"

ntools=$(wc -w <<<"$TOOLS")
# pristine + volume + a repo per tool (at most the volume size) + one restore at a time + slack
need_bytes=$((SIZE_BYTES * (3 + ntools) + (1 << 30)))
[ -f "$PRISTINE" ] && [ "$REBUILD_IMAGE" != 1 ] && need_bytes=$((need_bytes - SIZE_BYTES))
free_bytes=$(( $(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }') * 1024 ))
[ "$free_bytes" -ge "$need_bytes" ] \
  || die "$BENCH_DIR has $((free_bytes >> 20)) MiB free, needs ~$((need_bytes >> 20)) MiB; set BENCH_DIR to a bigger disk (not a small /tmp)"

if [ ! -f "$PRISTINE.ok" ] || [ ! -f "$PRISTINE" ] || [ "$REBUILD_IMAGE" = 1 ]; then
  rm -f "$PRISTINE" "$PRISTINE.ok"
  log "building the pristine ext4 image: $SIZE_BYTES bytes, $FILL_BYTES bytes of files from /usr (TestKit DiskImages.RealisticExt4)"
  dotnet "$IMAGETOOL" ext4 "$PRISTINE" "$SIZE_BYTES" "$FILL_BYTES" >&2 || die "building the image failed"
  touch "$PRISTINE.ok"
else
  log "reusing pristine image $PRISTINE (REBUILD_IMAGE=1 to rebuild)"
fi
log "copying it to the volume under test, fully allocated"
cp --sparse=never "$PRISTINE" "$IMG"
sync

# ---------------------------------------------------------------------------------------------
# Measurement

declare -A R=()          # R[tool:step:metric]; metrics: wall cpu rss repo ok
declare -A FAILED=()     # FAILED[tool]=step that failed
STEPS=(init full incremental restore)

# Cache state before a timed step: cold = nothing cached; warm = the volume in the page cache
# (perf.md §4.2 measured peers warm, i.e. at their CPU limit).
prepare() {
  if [ "$COLD" = 1 ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches || warn "could not drop caches (read-only /proc/sys?); this step runs warm"
  elif [ "${1:-}" = backup ]; then
    cat "$IMG" > /dev/null
  fi
}

repo_bytes() { { du -sb "$1" 2>/dev/null || true; } | awk '{ print $1 }'; }   # empty if no repo yet

# measure TOOL STEP REPO CMD...: runs CMD under /usr/bin/time, records wall/CPU/RSS/repo size.
# Returns the command's status; its stdout/stderr go to $LOGS/TOOL-STEP.{out,err}.
measure() {
  local tool="$1" step="$2" repo="$3"; shift 3
  local base="$LOGS/$tool-$step" rc=0 line wall user sys rss_kib
  log "$tool: $step"
  /usr/bin/time -f '%e %U %S %M' -o "$base.time" "$@" >"$base.out" 2>"$base.err" || rc=$?
  # On failure time(1) writes "Command exited with non-zero status N" first: the numbers are last.
  line="$(tail -n 1 "$base.time" 2>/dev/null || true)"
  read -r wall user sys rss_kib <<<"$line" || true
  R["$tool:$step:wall"]="${wall:-}"
  R["$tool:$step:cpu"]="$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { printf "%.2f", u + s }')"
  R["$tool:$step:rss"]=$(( ${rss_kib:-0} / 1024 ))
  R["$tool:$step:repo"]="$(repo_bytes "$repo")"
  if [ "$rc" -ne 0 ]; then
    FAILED["$tool"]="$step"
    R["$tool:$step:ok"]="FAILED (exit $rc)"
    warn "$tool $step failed with exit code $rc; last lines of $base.err:"
    tail -n 15 "$base.err" >&2 || true
  fi
  return "$rc"
}

# Last integer value of a JSON field anywhere in a file (works on one-line and pretty JSON and on
# restic's JSON-lines output, whose summary comes last).
json_int() { grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9]*" "$1" 2>/dev/null | tail -n 1 | grep -o '[0-9]*$' || true; }

alive() { [ -z "${FAILED[$1]:-}" ]; }

# Whether the CLI wants an explicit `init` (the documented commands are backup/restore/snapshots);
# the help text is captured first because `grep -q` closing the pipe early trips pipefail.
cli_has_init=0
if [[ " $TOOLS " == *" blockrepl "* ]]; then
  cli_help="$(blockrepl --help 2>&1 || true)"
  if grep -qE '^[[:space:]]*(blockrepl[[:space:]]+)?init([[:space:]]|$)' <<<"$cli_help"; then cli_has_init=1; fi
fi

run_step() { # run_step TOOL STEP
  local tool="$1" step="$2" repo="$BENCH_DIR/repo-$1" target="$BENCH_DIR/restore-$1"
  alive "$tool" || return 0
  case "$tool:$step" in
    blockrepl:init)
      [ "$cli_has_init" = 1 ] || return 0   # otherwise the first backup creates the repository
      measure "$tool" "$step" "$repo" "${BLOCKREPL_CMD[@]}" init --repo "$repo" || true ;;
    restic:init)
      measure "$tool" "$step" "$repo" restic -r "$repo" init || true ;;
    blockrepl:full|blockrepl:incremental)
      prepare backup
      measure "$tool" "$step" "$repo" "${BLOCKREPL_CMD[@]}" backup "$IMG" --repo "$repo" --json || true ;;
    restic:full|restic:incremental)
      prepare backup
      measure "$tool" "$step" "$repo" restic -r "$repo" backup --host "$RESTIC_HOST" --json "$IMG" || true ;;
    blockrepl:restore)
      rm -rf "$target"; mkdir -p "$target"
      prepare
      measure "$tool" "$step" "$repo" "${BLOCKREPL_CMD[@]}" restore latest --repo "$repo" --to "$target/volume.img" || true
      verify "$tool" "$target/volume.img" "$target" ;;
    restic:restore)
      rm -rf "$target"; mkdir -p "$target"
      prepare
      measure "$tool" "$step" "$repo" restic -r "$repo" restore latest --target "$target" || true
      verify "$tool" "$target$IMG" "$target" ;;   # restic recreates the absolute path under --target
  esac
}

verify() { # verify TOOL RESTORED_FILE TARGET_DIR: byte comparison with the (changed) volume
  local tool="$1" file="$2" target="$3"
  alive "$tool" || return 0
  if [ ! -f "$file" ]; then
    R["$tool:restore:ok"]="MISSING OUTPUT"; FAILED["$tool"]=restore
    warn "$tool restore produced no $file"
  elif cmp -s "$IMG" "$file"; then
    R["$tool:restore:ok"]="identical"
  else
    R["$tool:restore:ok"]="MISMATCH"; FAILED["$tool"]=restore
    warn "$tool restore differs from the volume: $(cmp "$IMG" "$file" 2>&1 | head -n 1)"
  fi
  rm -rf "$target"   # free the space before the next tool restores
}

first_line() { # first_line CMD...: first output line of a command that succeeded, else "?"
  local out
  out="$("$@" 2>/dev/null)" && [ -n "$out" ] && printf '%s\n' "${out%%$'\n'*}" || echo '?'
}

versions() {
  local b="not run" r="not run"
  if [[ " $TOOLS " == *" blockrepl "* ]]; then b="$(first_line blockrepl --version)"; fi
  if [[ " $TOOLS " == *" restic "* ]]; then r="$(first_line restic version)"; fi
  printf -- '- blockrepl: %s\n- restic: %s (default settings: zstd auto compression, AES-256 + Poly1305)\n' "$b" "$r"
  printf -- '- dotnet %s, %s, %s CPUs, kernel %s\n' "$(dotnet --version)" "$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null)" "$(nproc)" "$(uname -r)"
}

for step in init full; do
  for tool in $TOOLS; do run_step "$tool" "$step"; done
done

log "changing $CHANGE_PCT % of the volume ($CHANGE_BLOCK-byte aligned blocks, seed $SEED)"
change_out="$(dotnet "$IMAGETOOL" modify "$IMG" "$CHANGE_FRACTION" "$CHANGE_BLOCK" "$SEED")" || die "imagetool modify failed"
CHANGED_BYTES="$(sed -n 's/.*changedBytes=\([0-9]*\).*/\1/p' <<<"$change_out")"
CHANGED_BLOCKS="$(sed -n 's/.*changedBlocks=\([0-9]*\).*/\1/p' <<<"$change_out")"
sync

for step in incremental restore; do
  for tool in $TOOLS; do run_step "$tool" "$step"; done
done

if [[ " $TOOLS " == *" blockrepl "* ]] && alive blockrepl; then
  blockrepl snapshots --repo "$BENCH_DIR/repo-blockrepl" --json >"$LOGS/blockrepl-snapshots.out" 2>&1 \
    || warn "blockrepl snapshots failed (see $LOGS/blockrepl-snapshots.out)"
fi

# ---------------------------------------------------------------------------------------------
# Report

fmt() { awk -v x="$1" -v d="${2:-1}" 'BEGIN { if (x == "") print "–"; else printf "%.*f", d, x }'; }
mib() { [ -n "$1" ] && awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }' || echo "–"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.2f", a / b }'; }

report() {
  local gib mb tool step wall cpu
  gib="$(awk -v s="$SIZE_BYTES" 'BEGIN { print s / 1073741824 }')"
  echo "# BlockRepl end-to-end benchmark"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT_DESC."
  echo "Volume: $(mib "$SIZE_BYTES") MiB ext4 image, $FILL_PCT % filled with files from /usr, fully allocated;"
  echo "change: $CHANGED_BLOCKS × $CHANGE_BLOCK B scattered aligned overwrites ($(mib "$CHANGED_BYTES") MiB, seed $SEED)."
  echo "Cache: $([ "$COLD" = 1 ] && echo 'cold (sync + drop_caches before every step)' || echo 'warm (volume read into the page cache before each backup)')."
  versions
  echo
  echo "| tool | step | wall s | CPU s | core·s/GiB | MB/s | peak RSS MiB | repo MiB | note |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for tool in $TOOLS; do
    for step in "${STEPS[@]}"; do
      wall="${R[$tool:$step:wall]:-}"
      [ -n "$wall" ] || [ -n "${R[$tool:$step:ok]:-}" ] || continue
      cpu="${R[$tool:$step:cpu]:-}"
      if [ "$step" = init ]; then
        echo "| $tool | $step | $(fmt "$wall" 2) | $(fmt "$cpu" 2) | – | – | ${R[$tool:$step:rss]:-–} | $(mib "${R[$tool:$step:repo]:-}") | ${R[$tool:$step:ok]:-} |"
        continue
      fi
      mb="$(awk -v s="$SIZE_BYTES" -v w="$wall" 'BEGIN { if (w > 0) printf "%.0f", s / w / 1e6; else print "–" }')"
      echo "| $tool | $step | $(fmt "$wall" 2) | $(fmt "$cpu" 2) | $(awk -v c="$cpu" -v g="$gib" 'BEGIN { printf "%.2f", c / g }') | $mb | ${R[$tool:$step:rss]:-–} | $(mib "${R[$tool:$step:repo]:-}") | ${R[$tool:$step:ok]:-} |"
    done
  done

  if [[ " $TOOLS " == *" blockrepl "* && " $TOOLS " == *" restic "* ]]; then
    echo
    echo "blockrepl / restic (below 1 = blockrepl better):"
    echo
    echo "| step | wall | CPU | peak RSS | repo size after step |"
    echo "|---|---|---|---|---|"
    for step in full incremental restore; do
      echo "| $step | $(ratio "${R[blockrepl:$step:wall]:-}" "${R[restic:$step:wall]:-}") | $(ratio "${R[blockrepl:$step:cpu]:-}" "${R[restic:$step:cpu]:-}") | $(ratio "${R[blockrepl:$step:rss]:-}" "${R[restic:$step:rss]:-}") | $(ratio "${R[blockrepl:$step:repo]:-}" "${R[restic:$step:repo]:-}") |"
    done
  fi

  echo
  echo "Incremental storage for $(mib "$CHANGED_BYTES") MiB changed:"
  echo
  echo "| tool | reported stored MiB | repo growth MiB (du) | growth / changed |"
  echo "|---|---|---|---|"
  local reported growth
  for tool in $TOOLS; do
    case "$tool" in
      blockrepl) reported="$(json_int "$LOGS/blockrepl-incremental.out" storedBytes)" ;;   # CLI --json field
      restic) reported="$(json_int "$LOGS/restic-incremental.out" data_added)" ;;          # restic summary, before compression
    esac
    growth=""
    local after="${R[$tool:incremental:repo]:-}" before="${R[$tool:full:repo]:-}"
    if [ -n "$after" ] && [ -n "$before" ]; then growth=$((after - before)); fi
    echo "| $tool$([ "$tool" = restic ] && echo ' (data_added, uncompressed)') | $(mib "$reported") | $(mib "$growth") | $(ratio "$growth" "$CHANGED_BYTES") |"
  done
  echo
  echo "Logs: $LOGS"
}

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
log "report written to $OUT"

if [ "${#FAILED[@]}" -gt 0 ]; then
  for tool in "${!FAILED[@]}"; do warn "$tool failed at step ${FAILED[$tool]}"; done
  exit 1
fi
