#!/usr/bin/env bash
# A throwaway local S3 server for BlockRepl's tests: single-node Ceph Pacific from Debian's
# packages (ceph-mon ceph-osd radosgw; install them with scripts/test.sh or
#   apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw)
# started by hand (no systemd, no cephadm, no root), every socket bound to 127.0.0.1.
# Recipe and measurements: ../shared/ref/rgw.md (sections 2 and 3).
#
# Starts from nothing every time: wipes $RGW_HOME/cluster, creates 1 mon, 1 OSD (memstore by
# default), 1 radosgw (beast) and 1 S3 user with fixed keys. Prints one line
#   S3 READY http://127.0.0.1:PORT region=us-east-1 access_key=... pids: mon=.. osd=.. rgw=..
# once a SigV4-signed request as that user has succeeded; exits 1 otherwise, after printing the
# tails of the daemon logs and stopping whatever it started. Stop with stop-rgw.sh (same env).
# Several instances run side by side when RGW_HOME, RGW_PORT, MON_PORT and OSD_PORT_MIN differ.
#
# Env knobs:
#   RGW_PORT        S3 port on 127.0.0.1                          (default 7480)
#   RGW_HOME        base dir; cluster state and logs go to $RGW_HOME/cluster
#                   (default ${TMPDIR:-/tmp}/blockrepl-rgw-$RGW_PORT)
#   MON_PORT        mon msgr2 port on 127.0.0.1                   (default 13300)
#   OSD_PORT_MIN    first of 100 ports for the OSD and clients    (default 16800)
#   OSD_STORE       memstore | bluestore (sparse file)            (default memstore)
#   MEMSTORE_BYTES  memstore capacity; OSD RSS is about 2x the data stored   (default 8 GiB)
#   BLUESTORE_BYTES size of the sparse bluestore file             (default 20 GiB)
#   STORAGE_CLASSES classes accepted besides STANDARD, all on the same data pool
#                   (default "STANDARD_IA ONEZONE_IA INTELLIGENT_TIERING GLACIER GLACIER_IR DEEP_ARCHIVE";
#                    "" keeps RGW's default: only STANDARD)
#   RGW_LC_DEBUG_INTERVAL  if set (seconds): a lifecycle "day" lasts this long
#   RGW_OWNER_PID   if set: a watchdog stops the cluster when this process is gone (so a killed
#                   test host leaves no daemons behind)
#   S3_ACCESS_KEY / S3_SECRET_KEY                                 (defaults below)
set -euo pipefail

RGW_PORT=${RGW_PORT:-7480}
RGW_HOME=${RGW_HOME:-${TMPDIR:-/tmp}/blockrepl-rgw-$RGW_PORT}
D=$RGW_HOME/cluster
MON_PORT=${MON_PORT:-13300}
OSD_PORT_MIN=${OSD_PORT_MIN:-16800}
OSD_STORE=${OSD_STORE:-memstore}
MEMSTORE_BYTES=${MEMSTORE_BYTES:-8589934592}
BLUESTORE_BYTES=${BLUESTORE_BYTES:-21474836480}
STORAGE_CLASSES=${STORAGE_CLASSES-STANDARD_IA ONEZONE_IA INTELLIGENT_TIERING GLACIER GLACIER_IR DEEP_ARCHIVE}
S3_ACCESS_KEY=${S3_ACCESS_KEY:-TESTACCESSKEY0000001}
S3_SECRET_KEY=${S3_SECRET_KEY:-testsecretkey000000000000000000000000001}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# ceph-mon, ceph-osd and monmaptool live in /usr/bin, but be safe for non-root PATHs.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

T0=$(date +%s%N)
ts() { printf '[%6.2fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*"; }
die() {
  echo "ERROR: $*" >&2
  local f
  for f in "$D"/log/*.out "$D"/log/mon.a.log "$D"/log/osd.0.log "$D"/log/client.rgw.a.log; do
    [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }
  done
  KEEP_DATA=1 RGW_HOME=$RGW_HOME "$HERE/stop-rgw.sh" >&2 || true   # logs stay in $D/log
  exit 1
}
start_daemon() { # name cmd...   (foreground mode, own session, PID recorded)
  local name=$1; shift
  setsid nohup "$@" -f >"$D/log/$name.out" 2>&1 </dev/null &
  echo $! >"$D/run/$name.pid"
}
# alive = exists and is not a zombie (daemons are re-parented to PID 1, which may reap them late)
alive() { local st; st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null); [ -n "$st" ] && [ "$st" != Z ]; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph uuidgen curl python3; do
  command -v "$b" >/dev/null || { echo "ERROR: missing $b: apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw curl uuid-runtime python3" >&2; exit 1; }
done
case "$OSD_STORE" in memstore|bluestore) ;; *) echo "ERROR: OSD_STORE must be memstore or bluestore" >&2; exit 1;; esac
# refuse to run over a live cluster in the same home
for p in "$D"/run/*.pid; do
  [ -f "$p" ] && alive "$(cat "$p")" && { echo "ERROR: $(basename "$p" .pid) (pid $(cat "$p")) still running in $D; run stop-rgw.sh first" >&2; exit 1; }
done
# fail fast (and clearly) when a port is taken, instead of a daemon retry loop
for p in "$RGW_PORT" "$MON_PORT"; do
  listening "$p" && { echo "ERROR: 127.0.0.1:$p is already in use (RGW_PORT=$RGW_PORT MON_PORT=$MON_PORT)" >&2; exit 1; }
done
rm -rf "$D"
mkdir -p "$D"/{run,log,mon/ceph-a,osd/ceph-0,rgw,crash}
CONF=$D/ceph.conf
FSID=$(uuidgen)

if [ "$OSD_STORE" = memstore ]; then
  OSD_CONF="osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES"
else
  # the block file must not be <osd data>/block: bluestore creates a symlink of that name
  OSD_CONF="osd objectstore = bluestore
bluestore block path = $D/osd/osd0-block.img
bluestore block create = true
bluestore block size = $BLUESTORE_BYTES
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 939524096
bluestore cache autotune = true
bdev enable discard = false"
fi

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
ms bind port min = $OSD_PORT_MIN
ms bind port max = $((OSD_PORT_MIN + 99))
# cephx off inside the cluster; S3 SigV4 is RGW's own and stays fully enforced
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
# radosgw defaults ms_mon_client_mode to "secure", impossible with auth none -> EACCES (-13) loop
ms mon client mode = crc secure
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
pid file = $D/run/\$name.daemon-pid
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
crash dir = $D/crash
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mon cluster log file = $D/log/cluster.log
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false

[mon]
mon pg warn min per osd = 0
# commit map changes every 50 ms instead of every 1 s: pool creation, OSD boot etc. ~20x faster
paxos propose interval = 0.05
paxos min wait = 0.01

[osd]
$OSD_CONF
osd max object name len = 460
osd max object namespace len = 64

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw thread pool size = 32
rgw data = $D/rgw
rgw zone = default
rgw enable usage log = false
$( [ -n "${RGW_LC_DEBUG_INTERVAL:-}" ] && echo "rgw lc debug interval = $RGW_LC_DEBUG_INTERVAL" )
EOF
ts "config written ($OSD_STORE) in $D"

# --- watchdog: stops the cluster when the owner process is gone
if [ -n "${RGW_OWNER_PID:-}" ]; then
  alive "$RGW_OWNER_PID" || die "RGW_OWNER_PID=$RGW_OWNER_PID is not running"
  setsid nohup bash -c '
    while kill -0 "$1" 2>/dev/null && [ -f "$2/run/watch.pid" ]; do sleep 1; done
    if [ -f "$2/run/watch.pid" ]; then rm -f "$2/run/watch.pid"; RGW_HOME="$3" "$4/stop-rgw.sh"; fi
  ' watchdog "$RGW_OWNER_PID" "$D" "$RGW_HOME" "$HERE" >"$D/log/watchdog.out" 2>&1 </dev/null &
  echo $! >"$D/run/watch.pid"
fi

# --- mon
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$D/monmap" >"$D/log/monmaptool.out" 2>&1 || die monmaptool
ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" >"$D/log/mon-mkfs.out" 2>&1 || die "mon mkfs"
start_daemon mon.a ceph-mon -c "$CONF" -i a
C="ceph -c $CONF --connect-timeout 10"
up=0; for _ in $(seq 1 100); do
  alive "$(cat "$D/run/mon.a.pid")" || die "ceph-mon exited (port 127.0.0.1:$MON_PORT in use?)"
  $C mon stat >/dev/null 2>&1 && { up=1; break; }; sleep 0.1
done
[ $up = 1 ] || die "mon not answering on 127.0.0.1:$MON_PORT"
ts "mon up"

# --- osd
OSD_UUID=$(uuidgen)
OSD_ID=$($C osd new "$OSD_UUID" 2>"$D/log/osd-new.out") || die "osd new"
[ "$OSD_ID" = 0 ] || die "unexpected osd id $OSD_ID"
# create all RGW pools in one ceph session, in parallel with OSD mkfs/boot (otherwise the first
# CreateBucket / PutObject / multipart each pay 2-4 s for pool creation)
POOLS=".rgw.root default.rgw.control default.rgw.meta default.rgw.log default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec"
{ for p in $POOLS; do echo "osd pool create $p 8"; echo "osd pool application enable $p rgw"; done; } \
  | $C >"$D/log/pools.out" 2>&1 &
POOLS_PID=$!
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1 || die "osd mkfs"
ts "osd mkfs done"
start_daemon osd.0 ceph-osd -c "$CONF" -i 0
wait $POOLS_PID || die "pool creation"
up=0; for _ in $(seq 1 300); do
  alive "$(cat "$D/run/osd.0.pid")" || die "ceph-osd exited"
  $C osd dump 2>/dev/null | grep -q '^osd.0 up' && { up=1; break; }; sleep 0.1
done
[ $up = 1 ] || die "osd.0 not up"
ts "osd.0 up, pools created"

# --- S3 user + zone storage classes (radosgw-admin works before radosgw runs; its first call
#     creates the default zone/zonegroup, so the user goes first)
A="radosgw-admin -c $CONF"
$A user create --uid=test --display-name="Test User" \
  --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >"$D/log/user-create.out" 2>&1 || die "user create"
ts "user 'test' created"
if [ -n "$STORAGE_CLASSES" ]; then   # = "zonegroup/zone placement add --storage-class X" per class, in 4 calls
  $A zonegroup get >"$D/zonegroup.json" 2>>"$D/log/placement.out" || die "zonegroup get"
  $A zone get >"$D/zone.json" 2>>"$D/log/placement.out" || die "zone get"
  SC="$STORAGE_CLASSES" python3 - "$D/zonegroup.json" "$D/zone.json" <<'PY' >>"$D/log/placement.out" 2>&1 || die "editing placement json"
import json, os, sys
classes = os.environ["SC"].split()
zg = json.load(open(sys.argv[1])); z = json.load(open(sys.argv[2]))
for t in zg["placement_targets"]:
    if t["name"] == "default-placement":
        t["storage_classes"] = sorted(set(t["storage_classes"]) | set(classes))
for p in z["placement_pools"]:
    if p["key"] == "default-placement":
        for c in classes:
            p["val"]["storage_classes"].setdefault(c, {"data_pool": "default.rgw.buckets.data"})
json.dump(zg, open(sys.argv[1], "w")); json.dump(z, open(sys.argv[2], "w"))
PY
  $A zonegroup set --rgw-zonegroup default --infile "$D/zonegroup.json" >>"$D/log/placement.out" 2>&1 || die "zonegroup set"
  $A zone set --rgw-zone default --infile "$D/zone.json" >>"$D/log/placement.out" 2>&1 || die "zone set"
  ts "storage classes: STANDARD $STORAGE_CLASSES"
fi

# --- rgw
start_daemon rgw.a radosgw -c "$CONF" -n client.rgw.a
E0=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855   # sha256 of an empty body
body=""; up=0; for _ in $(seq 1 600); do
  alive "$(cat "$D/run/rgw.a.pid")" || die "radosgw exited (port 127.0.0.1:$RGW_PORT in use?)"
  body=$(curl -s --max-time 5 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
         -H "x-amz-content-sha256: $E0" "http://127.0.0.1:$RGW_PORT/" || true)
  # must be *our* RGW answering as user 'test' (guards against another server on the port)
  case "$body" in *"<ListAllMyBucketsResult"*"<ID>test</ID>"*) up=1; break;; esac
  sleep 0.05
done
[ $up = 1 ] || die "radosgw not answering on 127.0.0.1:$RGW_PORT (last answer: ${body:0:200})"
ts "radosgw: authenticated ListBuckets OK"

echo "S3 READY http://127.0.0.1:$RGW_PORT region=us-east-1 access_key=$S3_ACCESS_KEY home=$RGW_HOME" \
     "pids: mon=$(cat "$D/run/mon.a.pid") osd=$(cat "$D/run/osd.0.pid") rgw=$(cat "$D/run/rgw.a.pid")"
