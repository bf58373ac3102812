#!/usr/bin/env bash
# Stops the cluster started by start-rgw.sh (same RGW_HOME / RGW_PORT env) by the PIDs it
# recorded: watchdog, then rgw, osd, mon. Deletes $RGW_HOME/cluster (data + logs) unless
# KEEP_DATA=1, and $RGW_HOME itself when that leaves it empty. Safe to run twice.
set -uo pipefail
RGW_PORT=${RGW_PORT:-7480}
RGW_HOME=${RGW_HOME:-${TMPDIR:-/tmp}/blockrepl-rgw-$RGW_PORT}
D=$RGW_HOME/cluster
# alive = exists and is not a zombie (daemons are re-parented to PID 1, which may reap them late)
alive() { local st; st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null); [ -n "$st" ] && [ "$st" != Z ]; }
rc=0
for n in watch rgw.a osd.0 mon.a; do
  f=$D/run/$n.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  rm -f "$f"   # first: a watchdog that sees its pid file gone exits without stopping anything
  [ -n "$pid" ] && alive "$pid" || continue
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 200); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then
    echo "$n ($pid) ignored SIGTERM for 10 s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && { echo "ERROR: $n ($pid) survived SIGKILL" >&2; rc=1; }
  fi
  echo "stopped $n ($pid)"
done
if [ "${KEEP_DATA:-0}" != 1 ] && [ $rc = 0 ]; then
  rm -rf "$D"
  rmdir "$RGW_HOME" 2>/dev/null || true
fi
exit $rc
