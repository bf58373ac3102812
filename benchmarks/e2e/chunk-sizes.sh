#!/usr/bin/env bash
# Chunk-size sweep: why the repository stores 64 KiB chunks (issue #2: "chosen by measurement").
# For each chunk size: full backup of the realistic image, a 1 % change of scattered 64 KiB writes,
# incremental; prints wall time, CPU, stored bytes and incremental stored/changed per size.
#   benchmarks/e2e/chunk-sizes.sh        (uses the image cached by run.sh, builds it if missing)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_DIR="${BENCH_DIR:-$ROOT/.work/bench}"
SIZES="${SIZES:-16K 32K 64K 128K 512K}"
IMG="$(ls "$BENCH_DIR"/image-*-fill*.img 2>/dev/null | head -n 1 || true)"
[ -n "$IMG" ] || { echo "no cached image in $BENCH_DIR: run benchmarks/e2e/run.sh first" >&2; exit 1; }
dotnet build src/BlockRepl.Cli -c Release -v quiet -nologo >&2
dotnet build benchmarks/e2e/imagetool -c Release -v quiet -nologo >&2
BR="$ROOT/src/BlockRepl.Cli/bin/Release/net10.0/blockrepl"
TOOL="dotnet $ROOT/benchmarks/e2e/imagetool/bin/Release/net10.0/imagetool.dll"
W="$BENCH_DIR/chunks"
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]])" "$1" "$2"; }
echo "| chunk | full wall s | full CPU s | full stored MiB | incr wall s | incr CPU s | changed MiB | incr new MiB | incr stored MiB | stored / changed |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for cs in $SIZES; do
  rm -rf "$W"; mkdir -p "$W"
  cp --sparse=never "$IMG" "$W/vol.img"
  cat "$W/vol.img" > /dev/null
  "$BR" init --repo "$W/repo" --chunk-size "$cs" > /dev/null
  /usr/bin/time -f '%e %U %S' -o "$W/full.time" "$BR" backup "$W/vol.img" --repo "$W/repo" --state-dir "$W/state" --json --no-progress > "$W/full.json"
  $TOOL modify "$W/vol.img" 0.01 65536 42 > "$W/change.txt"
  changed=$(sed -n 's/.*changedBytes=\([0-9]*\).*/\1/p' "$W/change.txt")
  cat "$W/vol.img" > /dev/null
  /usr/bin/time -f '%e %U %S' -o "$W/incr.time" "$BR" backup "$W/vol.img" --repo "$W/repo" --state-dir "$W/state" --json --no-progress > "$W/incr.json"
  read -r fw fu fs < "$W/full.time"; read -r iw iu is < "$W/incr.time"
  awk -v cs="$cs" -v fw="$fw" -v fu="$fu" -v fs="$fs" -v fst="$(json "$W/full.json" storedBytes)" \
      -v iw="$iw" -v iu="$iu" -v is="$is" -v ch="$changed" -v inew="$(json "$W/incr.json" newBytes)" -v ist="$(json "$W/incr.json" storedBytes)" \
      'BEGIN { printf "| %s | %.2f | %.2f | %.1f | %.2f | %.2f | %.1f | %.1f | %.1f | %.2f |\n", cs, fw, fu+fs, fst/1048576, iw, iu+is, ch/1048576, inew/1048576, ist/1048576, ist/ch }'
done
rm -rf "$W"
