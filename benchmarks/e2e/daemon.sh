#!/usr/bin/env bash
# Publishes blockrepl (ReadyToRun) and runs benchmarks/e2e/daemon.py (issue #6's lag/RPO benchmark).
#   benchmarks/e2e/daemon.sh                    # 4 GiB volume, 20 MB/s random writes, 60 s per source
#   SIZE_GIB=1 DURATION=20 benchmarks/e2e/daemon.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_DIR="${BENCH_DIR:-$ROOT/.work/bench}"
CLI="$BENCH_DIR/blockrepl-publish"
for tool in qemu-img qemu-storage-daemon python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing" >&2; exit 1; }
done
echo "==> publishing blockrepl (ReadyToRun)" >&2
dotnet publish src/BlockRepl.Cli -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true \
  -o "$CLI" -nodeReuse:false -v quiet -nologo >&2
BLOCKREPL="$CLI/blockrepl" WORK="${WORK:-$BENCH_DIR/daemon}" exec python3 benchmarks/e2e/daemon.py
