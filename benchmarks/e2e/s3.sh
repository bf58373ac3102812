#!/usr/bin/env bash
# S3 benchmark (issue #3): blockrepl vs restic's S3 backend against the same local RGW, one run.
# Full backup of the realistic image, a 1 % change (scattered 64 KiB writes), incremental; prints
# wall time, MB/s, and PUT requests per GiB (blockrepl: its own putRequests; restic: objects it
# created in its bucket, a lower bound of its PUTs, since lock files are written and deleted too).
#   benchmarks/e2e/s3.sh         (uses the image cached by run.sh; builds the CLI with ReadyToRun)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
BENCH_DIR="${BENCH_DIR:-$ROOT/.work/bench}"
IMG="$(ls "$BENCH_DIR"/image-*-fill*.img 2>/dev/null | head -n 1 || true)"
[ -n "$IMG" ] || { echo "no cached image in $BENCH_DIR: run benchmarks/e2e/run.sh first" >&2; exit 1; }
command -v restic >/dev/null || apt-get install -y --no-install-recommends restic >/dev/null
W="$BENCH_DIR/s3"; rm -rf "$W"; mkdir -p "$W"
PORT="${RGW_PORT:-17480}"
export RGW_PORT="$PORT" MON_PORT="${MON_PORT:-17300}" OSD_PORT_MIN="${OSD_PORT_MIN:-17500}" RGW_HOME="$W/rgw" RGW_OWNER_PID=$$
scripts/rgw/start-rgw.sh >"$W/rgw.out" 2>&1 || { cat "$W/rgw.out" >&2; exit 1; }
trap 'RGW_HOME="$W/rgw" scripts/rgw/stop-rgw.sh >/dev/null 2>&1 || true' EXIT
export AWS_ACCESS_KEY_ID=TESTACCESSKEY0000001 AWS_SECRET_ACCESS_KEY=testsecretkey000000000000000000000000001 AWS_REGION=us-east-1
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
EP="http://127.0.0.1:$PORT"
for b in br-bench restic-bench; do aws s3api create-bucket --bucket "$b" --endpoint-url "$EP" >/dev/null; done
count() { aws s3api list-objects-v2 --bucket "$1" --endpoint-url "$EP" --query 'length(Contents)' --output text; }

dotnet publish src/BlockRepl.Cli -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true -o "$W/pub" -v quiet -nologo >&2
dotnet build benchmarks/e2e/imagetool -c Release -v quiet -nologo >&2
BR="$W/pub/blockrepl"
TOOL="dotnet $ROOT/benchmarks/e2e/imagetool/bin/Release/net10.0/imagetool.dll"
cp --sparse=never "$IMG" "$W/vol.img"
SIZE=$(stat -c %s "$W/vol.img")
export RESTIC_PASSWORD=blockrepl-bench RESTIC_CACHE_DIR="$W/restic-cache"
restic -r "s3:$EP/restic-bench" init >/dev/null

t() { /usr/bin/time -f '%e %U %S %M' -o "$W/$1.time" "${@:2}"; }
row() { # tool step gib_changed puts [marker]
  read -r wall u s rss < "$W/$1-$2.time"
  awk -v tool="$1" -v step="$2" -v wall="$wall" -v u="$u" -v s="$s" -v size="$SIZE" -v ch="$3" -v puts="$4" -v mark="${5:-}" -v rss="$rss" \
    'BEGIN { printf "| %s | %s | %.2f | %.2f | %.0f | %s%d | %s%s | %.0f |\n", tool, step, wall, u+s, size/wall/1e6, mark, puts, mark, (ch>0 ? sprintf("%.0f", puts/ch) : "-"), rss/1024 }'
}
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

cat "$W/vol.img" >/dev/null
t br-full "$BR" backup "$W/vol.img" --repo s3://br-bench/repo --endpoint-url "$EP" --state-dir "$W/state" --json --no-progress > "$W/br-full.json"
cat "$W/vol.img" >/dev/null
t restic-full restic -r "s3:$EP/restic-bench" backup --host bench --json "$W/vol.img" > "$W/restic-full.json"
restic_full_objs=$(count restic-bench)

$TOOL modify "$W/vol.img" 0.01 65536 42 > "$W/change.txt"
changed=$(sed -n 's/.*changedBytes=\([0-9]*\).*/\1/p' "$W/change.txt")
cat "$W/vol.img" >/dev/null
t br-incr "$BR" backup "$W/vol.img" --repo s3://br-bench/repo --endpoint-url "$EP" --state-dir "$W/state" --json --no-progress > "$W/br-incr.json"
cat "$W/vol.img" >/dev/null
t restic-incr restic -r "s3:$EP/restic-bench" backup --host bench --json "$W/vol.img" > "$W/restic-incr.json"
restic_incr_objs=$(( $(count restic-bench) - restic_full_objs ))

gib_full=$(awk -v b="$(json "$W/br-full.json" changedBytes)" 'BEGIN{print b/1073741824}')
gib_incr=$(awk -v b="$changed" 'BEGIN{print b/1073741824}')
echo "Volume: $(numfmt --to=iec "$SIZE") realistic ext4 image; change: $(numfmt --to=iec "$changed") in scattered 64 KiB writes; RGW (Ceph 16, memstore) on 127.0.0.1; $(restic version | head -n1)."
echo
echo "| tool | step | wall s | CPU s | MB/s of volume | PUT requests | PUTs per GiB changed | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
row br full "$gib_full" "$(json "$W/br-full.json" putRequests)"
row restic full "$gib_full" "$restic_full_objs" "≥"
row br incr "$gib_incr" "$(json "$W/br-incr.json" putRequests)"
row restic incr "$gib_incr" "$restic_incr_objs" "≥"
echo
for step in full incr; do
  read -r bw _ < "$W/br-$step.time"; read -r rw _ < "$W/restic-$step.time"
  awk -v s="$step" -v b="$bw" -v r="$rw" 'BEGIN { printf "%s: blockrepl is %.1fx restic'"'"'s speed\n", s, r/b }'
done
