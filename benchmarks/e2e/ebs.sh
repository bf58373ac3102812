#!/usr/bin/env bash
# blockrepl → EBS direct APIs, against `blockrepl ebs-endpoint` on loopback (issue #4's benchmark):
# the realistic ext4 image, full snapshot, CHANGE_PCT % scattered change, incremental child, restore.
# For each endpoint rate (RATES, PutSnapshotBlock/s per snapshot; 0 = unthrottled) it reports blocks/s,
# MB/s put, PutSnapshotBlock requests (must equal the changed blocks), throttled answers and the
# core·seconds of client and endpoint. Both processes share this machine's two cores, so the
# unthrottled figure is the whole system's, not the client's alone.
#
#   benchmarks/e2e/ebs.sh                 # 2 GiB image, RATES="0 1000 200"
#   SIZE=1G RATES=0 benchmarks/e2e/ebs.sh
#
# Environment: SIZE [2G], FILL_PCT [60], CHANGE_PCT [1], SEED [42], RATES ["0 1000 200"],
#   BENCH_DIR [<repo>/.work/bench] (the image is shared with run.sh), OUT [benchmarks/e2e/ebs-last-run.md],
#   ENDPOINT_FSYNC [1] (0: the endpoint does not fsync block data).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SIZE="${SIZE:-2G}"
FILL_PCT="${FILL_PCT:-60}"
CHANGE_PCT="${CHANGE_PCT:-1}"
SEED="${SEED:-42}"
RATES="${RATES:-0 1000 200}"
BENCH_DIR="${BENCH_DIR:-$ROOT/.work/bench}"
OUT="${OUT:-$ROOT/benchmarks/e2e/ebs-last-run.md}"
ENDPOINT_FSYNC="${ENDPOINT_FSYNC:-1}"
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 LC_ALL=C

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

SIZE_BYTES="$(numfmt --from=iec "${SIZE%iB}")" || die "SIZE='$SIZE' is not a size"
FILL_BYTES=$((SIZE_BYTES * FILL_PCT / 100 / 4096 * 4096))
CHANGE_FRACTION="$(awk -v p="$CHANGE_PCT" 'BEGIN { printf "%.6f", p / 100 }')"
mkdir -p "$BENCH_DIR"
WORK="$BENCH_DIR/ebs"
rm -rf "$WORK" && mkdir -p "$WORK"

log "building imagetool and publishing blockrepl (ReadyToRun)"
dotnet build benchmarks/e2e/imagetool -c Release -nodeReuse:false -v quiet -nologo >&2 || die "imagetool build failed"
IMAGETOOL="$ROOT/benchmarks/e2e/imagetool/bin/Release/net10.0/imagetool.dll"
CLI="$BENCH_DIR/blockrepl-publish"
dotnet publish src/BlockRepl.Cli -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true \
  -o "$CLI" -nodeReuse:false -v quiet -nologo >&2 || die "publish failed"
BLOCKREPL="$CLI/blockrepl"

PRISTINE="$BENCH_DIR/image-${SIZE_BYTES}-fill${FILL_PCT}.img"
if [ ! -f "$PRISTINE.ok" ] || [ ! -f "$PRISTINE" ]; then
  log "building the realistic ext4 image ($SIZE, ${FILL_PCT}% files)"
  rm -f "$PRISTINE" "$PRISTINE.ok"
  dotnet "$IMAGETOOL" ext4 "$PRISTINE" "$SIZE_BYTES" "$FILL_BYTES" >&2 || die "building the image failed"
  touch "$PRISTINE.ok"
fi

export AWS_ACCESS_KEY_ID="AKIDBLOCKREPLBENCH" AWS_SECRET_ACCESS_KEY="blockrepl-bench-secret"
export AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_EC2_METADATA_DISABLED=true

cpu_of() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }   # utime+stime in s (USER_HZ = 100)
stat_of() { # $1 url, $2 op, $3 field
  curl -fsS "$1/_blockrepl/stats" | python3 -c "import json,sys; d=json.load(sys.stdin)['Operations'].get('$2',{}); print(d.get('$3',0))"
}

rows=()
for rate in $RATES; do
  log "endpoint rate: ${rate} PutSnapshotBlock/s per snapshot (0 = unthrottled)"
  img="$WORK/disk.img"
  cp --sparse=always "$PRISTINE" "$img"
  data="$WORK/data-$rate"; state="$WORK/state-$rate"
  fsync_flag=(); [ "$ENDPOINT_FSYNC" = 1 ] || fsync_flag=(--no-fsync)
  "$BLOCKREPL" ebs-endpoint --listen 127.0.0.1:0 --data "$data" --put-rate "$rate" "${fsync_flag[@]}" >"$WORK/endpoint.out" 2>"$WORK/endpoint.err" &
  ep=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/endpoint.out" 2>/dev/null && break; sleep 0.1; done
  url="$(sed -n 's/^listening on //p' "$WORK/endpoint.out")"
  [ -n "$url" ] || { kill $ep; die "endpoint did not start: $(cat "$WORK/endpoint.err")"; }

  for step in full incremental; do
    if [ "$step" = incremental ]; then
      dotnet "$IMAGETOOL" modify "$img" "$CHANGE_FRACTION" 65536 "$SEED" >"$WORK/change.txt"
    fi
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    cat "$img" >/dev/null   # warm: measure the replication, not the disk
    puts0="$(stat_of "$url" PutSnapshotBlock Succeeded)"; thr0="$(stat_of "$url" PutSnapshotBlock Throttled)"; epcpu0="$(cpu_of $ep)"
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$BLOCKREPL" backup "$img" --repo ebs://us-east-1 --ebs-endpoint-url "$url" \
      --state-dir "$state" --no-progress --json >"$WORK/$step.json" 2>"$WORK/$step.err" || { kill $ep; die "$step backup failed: $(cat "$WORK/$step.err")"; }
    read -r wall user sys rss <"$WORK/time.txt"
    epcpu1="$(cpu_of $ep)"
    puts=$(( $(stat_of "$url" PutSnapshotBlock Succeeded) - puts0 )); thr=$(( $(stat_of "$url" PutSnapshotBlock Throttled) - thr0 ))
    read -r changed put seconds wait < <(python3 -c "import json; d=json.load(open('$WORK/$step.json')); print(d['changedBlocks'], d['blocksPut'], d['seconds'], d['waitSeconds'])")
    rows+=("$(awk -v rate="$rate" -v step="$step" -v changed="$changed" -v put="$put" -v puts="$puts" -v thr="$thr" \
      -v s="$seconds" -v w="$wait" -v u="$user" -v sy="$sys" -v rss="$rss" -v e0="$epcpu0" -v e1="$epcpu1" 'BEGIN {
        t = s - w; if (t <= 0) t = 0.001
        printf "| %s | %s | %d | %d | %d | %.0f | %.1f | %d | %.2f | %.2f | %.2f | %.0f |",
          (rate == 0 ? "unthrottled" : rate "/s"), step, changed, put, puts, put / t, put * 0.524288 / t, thr, s, u + sy, e1 - e0, rss / 1024 }')")
  done

  sz="$(stat -c %s "$img")"
  snap="$(python3 -c "import json; print(json.load(open('$WORK/incremental.json'))['snapshotId'])")"
  /usr/bin/time -f '%e' -o "$WORK/rtime.txt" "$BLOCKREPL" restore "$snap" --repo ebs://us-east-1 --ebs-endpoint-url "$url" \
    --to "$WORK/restored.img" --size "$sz" --no-progress >/dev/null 2>"$WORK/restore.err" || { kill $ep; die "restore failed: $(cat "$WORK/restore.err")"; }
  cmp -s "$img" "$WORK/restored.img" || { kill $ep; die "restore of $snap differs from the image"; }
  rows+=("| ${rate/#0/unthrottled} | restore + cmp ok | | | | | $(awk -v t="$(cat "$WORK/rtime.txt")" -v b="$sz" 'BEGIN { printf "%.1f", b / t / 1e6 }') MB/s | | $(cat "$WORK/rtime.txt") | | | |")
  rm -f "$WORK/restored.img"
  kill $ep; wait $ep 2>/dev/null || true
  rm -rf "$data"
done

{
  echo "# blockrepl → EBS direct APIs (ebs-endpoint on loopback), $(date -u +%Y-%m-%d)"
  echo
  echo "Commit $(git rev-parse --short HEAD), image $SIZE ext4 ${FILL_PCT}% full, change ${CHANGE_PCT}% in 64 KiB writes, endpoint fsync=$ENDPOINT_FSYNC, $(nproc) cores shared by client and endpoint."
  echo "blocks/s and MB/s are over the upload (run time minus the wait for completion); PutSnapshotBlock = successful puts the endpoint counted."
  echo
  echo "| endpoint rate | step | changed blocks | blocks put | PutSnapshotBlock | blocks/s | MB/s | throttled | wall s | client core·s | endpoint core·s | client RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT"
