#!/usr/bin/env bash
# QEMU volumes (issue #5's benchmark): a qcow2 image of SIZE (a realistic ext4 image converted to qcow2), then
# CHANGE_PCT % of it overwritten in scattered 64 KiB writes through qemu-io (recorded by the dirty bitmap).
#   1. incremental by dirty bitmap (`backup qcow2:IMG`) against a full rescan of the same image and the same
#      change (the checkpoint bitmap removed, so the run reads everything and compares by hash);
#   2. the same absolute change on a SMALL_SIZE image, to show the incremental's cost does not follow the size;
#   3. full-read MB/s from one qemu-nbd server, in the same run: `nbdcopy URI null:` (read only) against
#      blockrepl's full read of the same unchanged export (`backup nbd+unix://…` into a repository that already
#      has it: read, zero check, XXH3 compare, nothing stored) and its first full backup (read, hash, compress, store).
# Wall seconds of the whole process, the job's own seconds (from the --json output: without the process start,
# the repository open and the qemu-storage-daemon start), and core·seconds (utime+stime of the process and its
# children) for each.
#
#   benchmarks/e2e/nbd.sh                       # SIZE=10G SMALL_SIZE=2G CHANGE_PCT=1
#   SIZE=4G SMALL_SIZE=1G benchmarks/e2e/nbd.sh
#
# Environment: SIZE [10G], SMALL_SIZE [2G], FILL_PCT [30], CHANGE_PCT [1], SEED [42],
#   BENCH_DIR [<repo>/.work/bench], OUT [benchmarks/e2e/nbd-last-run.md]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SIZE="${SIZE:-10G}"
SMALL_SIZE="${SMALL_SIZE:-2G}"
FILL_PCT="${FILL_PCT:-30}"
CHANGE_PCT="${CHANGE_PCT:-1}"
SEED="${SEED:-42}"
BENCH_DIR="${BENCH_DIR:-$ROOT/.work/bench}"
OUT="${OUT:-$ROOT/benchmarks/e2e/nbd-last-run.md}"
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 LC_ALL=C

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
for tool in qemu-img qemu-io qemu-nbd qemu-storage-daemon nbdcopy; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install qemu-utils qemu-system-common libnbd-bin)"
done

bytes() { numfmt --from=iec "${1%iB}"; }
SIZE_BYTES="$(bytes "$SIZE")" || die "SIZE='$SIZE' is not a size"
SMALL_BYTES="$(bytes "$SMALL_SIZE")" || die "SMALL_SIZE='$SMALL_SIZE' is not a size"
CHANGE_BYTES=$((SIZE_BYTES * CHANGE_PCT / 100 / 65536 * 65536))
mkdir -p "$BENCH_DIR"
WORK="$BENCH_DIR/nbd"
rm -rf "$WORK" && mkdir -p "$WORK"

log "building imagetool and publishing blockrepl (ReadyToRun)"
dotnet build benchmarks/e2e/imagetool -c Release -nodeReuse:false -v quiet -nologo >&2 || die "imagetool build failed"
IMAGETOOL="$ROOT/benchmarks/e2e/imagetool/bin/Release/net10.0/imagetool.dll"
CLI="$BENCH_DIR/blockrepl-publish"
dotnet publish src/BlockRepl.Cli -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true \
  -o "$CLI" -nodeReuse:false -v quiet -nologo >&2 || die "publish failed"
BLOCKREPL="$CLI/blockrepl"

# A pristine qcow2 per size: the realistic ext4 image (TestKit recipe), converted (zeros become holes).
pristine() { # $1 bytes -> path
  local raw="$BENCH_DIR/qcow2-src-$1.raw" q="$BENCH_DIR/pristine-$1-fill$FILL_PCT.qcow2"
  if [ ! -f "$q.ok" ]; then
    log "building the $(numfmt --to=iec "$1") qcow2 image (${FILL_PCT}% files)"
    rm -f "$q" "$q.ok"
    dotnet "$IMAGETOOL" ext4 "$raw" "$1" $(($1 * FILL_PCT / 100 / 4096 * 4096)) >&2 || die "building the image failed"
    qemu-img convert -f raw -O qcow2 "$raw" "$q"
    rm -f "$raw"
    touch "$q.ok"
  fi
  echo "$q"
}

# CHANGE bytes of scattered 64 KiB writes with qemu-io (so the image's bitmaps record them); seeded.
change() { # $1 image, $2 image bytes, $3 change bytes, $4 seed
  awk -v n=$(($3 / 65536)) -v slots=$(($2 / 65536)) -v seed="$4" 'BEGIN {
    srand(seed); for (i = 0; i < n; i++) { do { s = int(rand() * slots) } while (s in seen); seen[s] = 1;
      printf "write -P 0x%02x %.0f 64k\n", 1 + int(rand() * 254), s * 65536 } }' > "$WORK/writes.txt"
  qemu-io -f qcow2 "$1" < "$WORK/writes.txt" > /dev/null
}

cpu_children() { awk '{ print ($14 + $15 + $16 + $17) / 100 }' "/proc/$1/stat"; }
# Runs a command; prints "wall cpu" (cpu = this subshell's children: the command and what it started).
measure() {
  local t0 t1 c
  t0=$(date +%s.%N)
  ( "$@" > "$WORK/last.out" 2> "$WORK/last.err"; echo $? > "$WORK/last.rc"; awk '{ print ($16 + $17) / 100 }' /proc/$BASHPID/stat > "$WORK/last.cpu" )
  t1=$(date +%s.%N)
  [ "$(cat "$WORK/last.rc")" = 0 ] || { cat "$WORK/last.err" >&2; die "failed: $*"; }
  awk -v a="$t0" -v b="$t1" -v c="$(cat "$WORK/last.cpu")" 'BEGIN { printf "%.3f %.2f\n", b - a, c }'
}
json_field() { python3 -c "import json,sys; print(json.load(open('$WORK/last.out'))['$1'])"; }

# One size: FULL, change, then incremental vs rescan from the same starting point. Prints a table row.
run_size() { # $1 bytes, $2 change bytes
  local q img="$WORK/disk-$1.qcow2" repo="$WORK/repo-$1" state="$WORK/state-$1"
  q="$(pristine "$1")"
  cp --reflink=auto "$q" "$img"
  log "$(numfmt --to=iec "$1"): full backup (starts the checkpoint bitmap)"
  measure "$BLOCKREPL" backup "qcow2:$img" --repo "$repo" --state-dir "$state" --json --no-progress > /dev/null
  change "$img" "$1" "$2" "$SEED"
  cp --reflink=auto "$img" "$img.bak"; cp -a "$state" "$state.bak"
  log "$(numfmt --to=iec "$1"): incremental by dirty bitmap"
  read -r inc_wall inc_cpu < <(measure "$BLOCKREPL" backup "qcow2:$img" --repo "$repo" --state-dir "$state" --json --no-progress)
  local inc_mode inc_scanned inc_changed
  inc_mode="$(json_field mode)"; inc_scanned="$(json_field scannedBytes)"; inc_changed="$(json_field changedBytes)"
  local inc_job res_job; inc_job="$(json_field seconds)"
  [ "$inc_mode" = INCREMENTAL ] || die "expected INCREMENTAL, got $inc_mode"
  # The same starting point, tracking lost: everything is read and compared by hash.
  mv "$img.bak" "$img"; rm -rf "$state"; mv "$state.bak" "$state"
  qemu-img bitmap --remove "$img" "$(qemu-img info --output=json "$img" | python3 -c 'import json,sys; print([b["name"] for b in json.load(sys.stdin)["format-specific"]["data"]["bitmaps"] if b["name"].startswith("blockrepl-")][0])')"
  log "$(numfmt --to=iec "$1"): rescan of the same change"
  read -r res_wall res_cpu < <(measure "$BLOCKREPL" backup "qcow2:$img" --repo "$repo" --state-dir "$state" --json --no-progress)
  local res_mode res_changed
  res_mode="$(json_field mode)"; res_changed="$(json_field changedBytes)"; res_job="$(json_field seconds)"
  [ "$res_mode" = RESCAN ] || die "expected RESCAN, got $res_mode"
  [ "$res_changed" = "$inc_changed" ] || die "incremental found $inc_changed changed bytes, the rescan $res_changed"
  awk -v size="$(numfmt --to=iec "$1")" -v ch="$2" -v sc="$inc_scanned" -v iw="$inc_wall" -v ic="$inc_cpu" -v rw="$res_wall" -v rc="$res_cpu" -v cb="$inc_changed" \
      -v ij="$inc_job" -v rj="$res_job" 'BEGIN {
    printf "| %s | %.0f MiB | %.0f MiB | %.0f MiB | %.2f s, job %.2f s (%.2f core·s) | %.2f s, job %.2f s (%.2f core·s) | %.1f %% | %.1f %% |\n",
      size, ch / 1048576, sc / 1048576, cb / 1048576, iw, ij, ic, rw, rj, rc, 100 * iw / rw, 100 * ij / rj }'
  rm -f "$img"; rm -rf "$repo" "$state"
}

ROWS=""
ROWS+="$(run_size "$SIZE_BYTES" "$CHANGE_BYTES")"$'\n'
ROWS+="$(run_size "$SMALL_BYTES" "$CHANGE_BYTES")"$'\n'

# Full read from one qemu-nbd server: nbdcopy to null: against blockrepl's full backup (in that order, then again
# in the other order; the better of each is reported, so neither is favoured by a warm cache).
q="$(pristine "$SIZE_BYTES")"
SOCK="$WORK/qnbd.sock"
qemu-nbd --read-only --persistent --shared=8 --format=qcow2 --export-name=disk --socket="$SOCK" "$q" &
QNBD=$!
trap 'kill $QNBD 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
URI="nbd+unix:///disk?socket=$SOCK"
best_copy=""; best_full=""; best_read=""
better() { [ -z "$1" ] || [ "$(awk -v a="$2" -v b="${1%% *}" 'BEGIN { print (a < b) }')" = 1 ]; }
for round in 1 2 3; do
  log "full read round $round: nbdcopy"
  read -r w c < <(measure nbdcopy "$URI" null:)
  better "$best_copy" "$w" && best_copy="$w $c -"
  log "full read round $round: blockrepl first full backup"
  rm -rf "$WORK/repo-full" "$WORK/state-full"
  read -r w c < <(measure "$BLOCKREPL" backup "$URI" --repo "$WORK/repo-full" --state-dir "$WORK/state-full" --json --no-progress)
  better "$best_full" "$w" && best_full="$w $c $(json_field seconds)"
  log "full read round $round: blockrepl full read of the unchanged export"
  read -r w c < <(measure "$BLOCKREPL" backup "$URI" --repo "$WORK/repo-full" --state-dir "$WORK/state-full" --json --no-progress)
  better "$best_read" "$w" && best_read="$w $c $(json_field seconds)"
done
kill $QNBD; wait $QNBD 2>/dev/null || true
ALLOC=$(qemu-img info --output=json "$q" | python3 -c 'import json,sys; print(json.load(sys.stdin)["actual-size"])')
rm -rf "$WORK/repo-full" "$WORK/state-full"

{
  echo "# QEMU volumes: dirty-bitmap incrementals and NBD full reads (benchmarks/e2e/nbd.sh)"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; qcow2 images of realistic ext4 content (${FILL_PCT}% files);"
  echo "change: ${CHANGE_PCT}% of $SIZE = $(numfmt --to=iec "$CHANGE_BYTES") in scattered 64 KiB writes through qemu-io, seed $SEED."
  echo
  echo "| image | written | read by the incremental | changed (stored) | incremental (dirty bitmap) | rescan (hash compare) | incremental / rescan, process | job |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s' "$ROWS"
  echo
  echo "Full read of the $SIZE image ($(numfmt --to=iec "$ALLOC") allocated) from one qemu-nbd server (best of three rounds;"
  echo "MB/s of the volume size, by process wall and by the job's own seconds):"
  echo
  echo "| reader | process wall | MB/s | job | MB/s | core·s |"
  echo "|---|---|---|---|---|---|"
  awk -v s="$SIZE_BYTES" -v bc="$best_copy" -v bf="$best_full" -v br="$best_read" 'BEGIN {
    split(bc, c, " "); split(bf, f, " "); split(br, r, " ");
    printf "| nbdcopy URI null: (read only) | %.2f s | %.0f | | | %.2f |\n", c[1], s / c[1] / 1e6, c[2];
    printf "| blockrepl full read of the unchanged export (read, zero check, XXH3) | %.2f s | %.0f | %.2f s | %.0f | %.2f |\n", r[1], s / r[1] / 1e6, r[3], s / r[3] / 1e6, r[2];
    printf "| blockrepl first full backup (read, SHA-256, LZ4, store) | %.2f s | %.0f | %.2f s | %.0f | %.2f |\n", f[1], s / f[1] / 1e6, f[3], s / f[3] / 1e6, f[2];
    printf "\nfull read, blockrepl / nbdcopy wall: %.2f× by process, %.2f× by job\n", r[1] / c[1], r[3] / c[1] }'
} > "$OUT"
cat "$OUT"
