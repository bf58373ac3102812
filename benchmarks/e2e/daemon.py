#!/usr/bin/env python3
"""Issue #6's benchmark: `blockrepl daemon` lag and achieved RPO under a steady random-write load.

A SIZE volume takes RATE MB/s of random 64 KiB writes for DURATION seconds while the daemon replicates it into a
local repository with interval 0 (cycles back to back). Two sources, in one run:
  * rescan: a raw image file, read and compared by hash every cycle (a file or device without change tracking);
  * bitmap: the same content as a qcow2 image served by qemu-storage-daemon (standing in for the VM), written through
    its FUSE export, replicated as `qmp:SOCKET?node=NODE` (QEMU dirty bitmaps and a fleecing checkpoint per cycle).
The status endpoint is sampled every 0.25 s: lag = age of the instant the last recovery point shows. Reported:
lag p50/p99/max, achieved RPO (the lag just before each new point), cycles, the daemon's core·seconds (with its
children) and its peak RSS. Run by benchmarks/e2e/daemon.sh (which publishes the CLI), or directly:
  BLOCKREPL=path/to/blockrepl python3 benchmarks/e2e/daemon.py
Environment: SIZE_GIB [4], RATE_MB [20], DURATION [60], WORK [.work/bench/daemon], OUT [benchmarks/e2e/daemon-last-run.md],
  CASES [rescan,bitmap], VERBOSE (set: the daemon logs each cycle's phases at debug level into WORK/CASE/daemon.log)
"""
import json, os, random, shutil, signal, socket, statistics, subprocess, sys, threading, time, urllib.request

SIZE = int(os.environ.get("SIZE_GIB", "4")) << 30
RATE = float(os.environ.get("RATE_MB", "20")) * 1e6
DURATION = float(os.environ.get("DURATION", "60"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.environ.get("WORK", os.path.join(ROOT, ".work", "bench", "daemon"))
OUT = os.environ.get("OUT", os.path.join(ROOT, "benchmarks", "e2e", "daemon-last-run.md"))
BLOCKREPL = os.environ["BLOCKREPL"]
BLOCK = 64 << 10


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_base(path):
    """Half the volume in 1 MiB extents of random data, the rest holes; seeded."""
    rng = random.Random(7)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for mib in range(0, SIZE >> 20, 2):
            f.seek(mib << 20)
            f.write(rng.randbytes(1 << 20))


def writer(path, stop, stats):
    """RATE bytes/s of 64 KiB random writes at random 64 KiB-aligned offsets, flushed every 0.25 s."""
    rng = random.Random(11)
    fd = os.open(path, os.O_WRONLY)
    start = time.monotonic()
    written = 0
    buf = rng.randbytes(BLOCK * 64)
    last_sync = start
    try:
        while not stop.is_set():
            due = start + written / RATE
            now = time.monotonic()
            if now < due:
                time.sleep(min(0.01, due - now))
                continue
            off = rng.randrange(SIZE // BLOCK) * BLOCK
            k = rng.randrange(63) * BLOCK
            os.pwrite(fd, buf[k:k + BLOCK], off)
            written += BLOCK
            if now - last_sync > 0.25:
                os.fsync(fd)
                last_sync = now
    finally:
        os.fsync(fd)
        os.close(fd)
        stats["bytes"] = written
        stats["seconds"] = time.monotonic() - start


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime (fields 14-17; after the ')' split they start at index 11)
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def status(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.load(r)


def run_case(name, source, target_file, env_extra=None):
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    port = free_port()
    cfg = {"stateDir": os.path.join(d, "state"), "repository": os.path.join(d, "repo"), "interval": "0s",
           "statusListen": f"127.0.0.1:{port}", "volumes": [{"name": "vol", "source": source}]}
    with open(os.path.join(d, "blockrepl.json"), "w") as f:
        json.dump(cfg, f)
    env = dict(os.environ, DOTNET_EnableWriteXorExecute="0", DOTNET_GCConserveMemory="7", DOTNET_GCgen0size="0x200000")
    env.update(env_extra or {})
    logf = open(os.path.join(d, "daemon.log"), "w")
    args = [BLOCKREPL, "daemon", "--config", os.path.join(d, "blockrepl.json")] + (["--verbose"] if os.environ.get("VERBOSE") else [])
    p = subprocess.Popen(args, stdout=logf, stderr=logf, env=env)
    try:
        log(f"{name}: initial sync and a first incremental")
        t0 = time.monotonic()
        while True:
            if p.poll() is not None:
                raise SystemExit(f"{name}: the daemon exited: see {d}/daemon.log")
            try:
                s = status(port)
                # After the initial sync and one incremental: the lag of the full sync's view is not what is measured.
                if s["volumes"][0]["cycles"] >= 2:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        sync_seconds = time.monotonic() - t0
        log(f"{name}: {DURATION:.0f} s of {RATE / 1e6:.0f} MB/s random writes")
        stop = threading.Event()
        wstats = {}
        w = threading.Thread(target=writer, args=(target_file, stop, wstats))
        cpu0 = cpu_seconds(p.pid)
        cycles0 = s["cycles"]
        lags, rpos, peak_rss = [], [], 0
        last_point, last_lag = s.get("lastPoint"), None
        w.start()
        end = time.monotonic() + DURATION
        while time.monotonic() < end:
            s = status(port)
            lag = s.get("lagSeconds")
            if lag is not None:
                lags.append(lag)
            if s.get("lastPoint") != last_point and last_lag is not None:
                rpos.append(last_lag)  # the lag just before the new point replaced the previous one
            last_point, last_lag = s.get("lastPoint"), lag
            peak_rss = max(peak_rss, rss_kib(p.pid, "VmRSS"))
            time.sleep(0.25)
        stop.set()
        w.join()
        cpu = cpu_seconds(p.pid) - cpu0
        cycles = status(port)["cycles"] - cycles0
        hwm = rss_kib(p.pid, "VmHWM")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
        logf.close()

    def pct(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")
    return {
        "name": name, "sync": sync_seconds, "written": wstats["bytes"] / wstats["seconds"] / 1e6,
        "lag50": pct(lags, 0.5), "lag99": pct(lags, 0.99), "lagmax": max(lags) if lags else float("nan"),
        "rpo50": pct(rpos, 0.5), "rpo99": pct(rpos, 0.99), "cycles": cycles, "cpu": cpu,
        "cores": cpu / DURATION, "rss": peak_rss / 1024, "hwm": hwm / 1024,
    }


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    raw = os.path.join(WORK, "vol.raw")
    log(f"building the {SIZE >> 30} GiB volume (half random data)")
    make_base(raw)
    cases = os.environ.get("CASES", "rescan,bitmap").split(",")
    results = [run_case("rescan", raw, raw)] if "rescan" in cases else []

    if "bitmap" not in cases:
        return report(results)
    qcow2 = os.path.join(WORK, "vol.qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True)
    os.remove(raw)
    vm = os.path.join(WORK, "vm")
    os.makedirs(vm)
    fuse = os.path.join(vm, "disk")
    open(fuse, "w").close()
    qsd = subprocess.Popen([
        "qemu-storage-daemon",
        "--blockdev", f"driver=file,node-name=f0,filename={qcow2}",
        "--blockdev", "driver=qcow2,node-name=vm0,file=f0",
        "--chardev", f"socket,id=m0,path={vm}/qmp.sock,server=on,wait=off", "--monitor", "chardev=m0",
        "--export", f"type=fuse,id=guest,node-name=vm0,mountpoint={fuse},writable=on"])
    try:
        for _ in range(100):
            if os.path.exists(f"{vm}/qmp.sock") and os.path.ismount(fuse):
                break
            time.sleep(0.1)
        results.append(run_case("bitmap", f"qmp:{vm}/qmp.sock?node=vm0", fuse))
    finally:
        qsd.send_signal(signal.SIGTERM)
        qsd.wait(timeout=60)
    report(results)


def report(results):
    lines = [
        "# `blockrepl daemon`: lag and achieved RPO under random writes (benchmarks/e2e/daemon.py)",
        "",
        f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, {os.cpu_count()} cores; a {SIZE >> 30} GiB volume (half data),"
        f" {RATE / 1e6:.0f} MB/s of random 64 KiB writes for {DURATION:.0f} s, interval 0 (cycles back to back),"
        " a local repository; status sampled every 0.25 s.",
        "",
        "| source | initial sync + 1st incremental | writes achieved | lag p50 | lag p99 | lag max | achieved RPO p50 | p99 | cycles | daemon core·s (cores) | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['name']} | {r['sync']:.1f} s | {r['written']:.1f} MB/s | {r['lag50']:.2f} s | {r['lag99']:.2f} s | {r['lagmax']:.2f} s"
                     f" | {r['rpo50']:.2f} s | {r['rpo99']:.2f} s | {r['cycles']} | {r['cpu']:.1f} ({r['cores']:.2f}) | {r['hwm']:.0f} MiB |")
    lines += ["", "rescan: the image file read and compared by hash every cycle (fuzzy points); bitmap: qcow2 behind"
              " qemu-storage-daemon, `qmp:` source, one QEMU checkpoint (dirty bitmap + fleecing) per cycle (consistent points).",
              "Peak RSS is the daemon's VmHWM with the systemd unit's settings (packaging/systemd/blockrepl.service)."]
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
