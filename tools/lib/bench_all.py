#!/usr/bin/env python3
"""The harness behind tools/bench-all: the machine's limits, then Tessera's
data paths on a cluster of separate processes, each figure printed as a
share of the limit that bounds it, with CPU seconds per GiB for every
process. Standard library only; see tools/bench-all for what it runs."""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

IP = "127.96.0.1"
NODES = 7
MIB = 1 << 20
GIB = 1 << 30
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (proc(5), stat 14+15)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return None


def size_bytes(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if s.endswith(u):
            return int(s[: -len(u)]) * m
    return int(s)


class Cluster:
    """meta, NODES nodes, the S3 gateway and (later) a mount, as processes."""

    def __init__(self, binary, root):
        self.bin = binary
        self.root = root
        self.procs = {}
        self.env = dict(os.environ, TESSERA_CLUSTER=f"{root}/c/cluster.toml", TESSERA_LOG="warn")
        self.run("init", "--dir", f"{root}/c", "--meta", f"{IP}:7700")
        self.spawn("meta", "meta", "--data", f"{root}/meta", "--down-after", "2s", "--out-after", "5s",
                   "--repair-rate", "0", "--repair-parallel", "8")
        for i in range(NODES):
            self.spawn(f"node{i}", "node", "--data", f"{root}/n{i}", "--listen", f"{IP}:{7701 + i}",
                       "--heartbeat", "500ms")
        time.sleep(3)
        self.spawn("gateway", "s3", "--listen", f"{IP}:9000")
        time.sleep(1)

    def spawn(self, name, *args):
        log = open(f"{self.root}/{name}.log", "wb")
        self.procs[name] = subprocess.Popen([self.bin, *args], stdout=log, stderr=log, env=self.env)

    def run(self, *args, **kw):
        return subprocess.run([self.bin, *args], env=self.env, check=True, capture_output=True, **kw).stdout

    def servers(self):
        return {n: p.pid for n, p in self.procs.items() if p.poll() is None}

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait()


class CpuMeter:
    """CPU seconds each running process (and this script's children) spends
    between start and stop."""

    def __init__(self, pids):
        self.pids = dict(pids)
        self.before = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.children = os.times()
        self.t = time.monotonic()

    def stop(self, moved_bytes):
        gib = moved_bytes / GIB
        out = {}
        for n, p in self.pids.items():
            now = cpu_seconds(p)
            if now is not None and self.before[n] is not None:
                out[n] = now - self.before[n]
        t = os.times()
        out["client"] = (t.children_user - self.children.children_user) + (
            t.children_system - self.children.children_system)
        nodes = sum(v for k, v in out.items() if k.startswith("node"))
        summary = {k: v for k, v in out.items() if not k.startswith("node")}
        summary["nodes"] = nodes
        summary["servers"] = sum(v for k, v in out.items() if k != "client")
        return {k: {"cpu_s": round(v, 2), "cpu_s_per_gib": round(v / gib, 2) if gib else None}
                for k, v in summary.items()}


def machine_limits(binary, root):
    out = subprocess.run([binary, "bench-machine", "--dir", root, "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def s3_bench(cluster, args, report):
    key = json.loads(cluster.run("key", "create", "bench", "--json"))
    env = dict(cluster.env, AWS_ACCESS_KEY_ID=key["access_key"], AWS_SECRET_ACCESS_KEY=key["secret_key"])
    for size in args.sizes:
        cpu_of = []
        for n, p in cluster.servers().items():
            cpu_of += ["--cpu-of", f"{n}={p}"]
        # Issue 17 sets the small-object goals at 64 in flight (group commit
        # needs company), the large ones at 4-16.
        conc = args.small_concurrency if size_bytes(size) <= 4096 else args.concurrency
        print(f"S3 {size}, {conc} in flight...", file=sys.stderr)
        out = subprocess.run([cluster.bin, "bench", "--endpoint", f"http://{IP}:9000", "--size", size,
                              "--concurrency", str(conc), "--duration", args.duration, "--json",
                              *cpu_of], env=env, check=True, capture_output=True, text=True).stdout
        result = json.loads(out)
        for phase in result["phases"]:
            cpu = {c["name"]: c for c in phase["cpu"]}
            nodes = sum(c["cpu_s"] for n, c in cpu.items() if n.startswith("node"))
            gib = phase["ops"] * result["object_size"] / GIB
            report["s3"].append({
                "size": size, "concurrency": conc, "op": phase["op"], "ops_per_s": round(phase["ops_per_s"], 1),
                "mib_per_s": round(phase["mib_per_s"], 1), "p50_ms": phase["p50_ms"], "p99_ms": phase["p99_ms"],
                "errors": phase["errors"],
                "cpu_s_per_gib": {
                    "gateway": cpu.get("gateway", {}).get("cpu_s_per_gib"),
                    "meta": cpu.get("meta", {}).get("cpu_s_per_gib"),
                    "nodes": round(nodes / gib, 2) if gib else None,
                    "servers": cpu.get("servers", {}).get("cpu_s_per_gib"),
                    "client": cpu.get("client", {}).get("cpu_s_per_gib"),
                },
            })


def boto3_bench(cluster, args, report):
    """The issue's boto3 rows: 64 MiB objects from 4 threads, 1 MiB from 8,
    PUT then GET, servers' CPU metered per phase."""
    key = json.loads(cluster.run("key", "create", "bench-boto3", "--json"))
    env = dict(cluster.env, AWS_ACCESS_KEY_ID=key["access_key"], AWS_SECRET_ACCESS_KEY=key["secret_key"])
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_boto3.py")
    secs = str(duration_seconds(args.duration))
    for size, threads in ((64 * MIB, 4), (MIB, 8)):
        print(f"boto3 {size // MIB} MiB, {threads} threads...", file=sys.stderr)
        proc = subprocess.Popen([sys.executable, script, f"http://{IP}:9000", "bench-boto3", str(size),
                                 str(threads), secs], env=env, stdout=subprocess.PIPE, text=True)
        meter = CpuMeter(cluster.servers())
        for line in proc.stdout:
            phase = json.loads(line)
            cpu = meter.stop(phase["ops"] * size)
            meter = CpuMeter(cluster.servers())
            gib = phase["ops"] * size / GIB
            cpu["client"] = {"cpu_s": phase["client_cpu_s"],
                             "cpu_s_per_gib": round(phase["client_cpu_s"] / gib, 2) if gib else None}
            phase["cpu"] = cpu
            report["boto3"].append(phase)
        if proc.wait() != 0:
            raise SystemExit("the boto3 benchmark failed")


def duration_seconds(d):
    """Seconds in a duration such as 10s, 500ms or 2m."""
    for unit, mult in (("ms", 0.001), ("s", 1), ("m", 60)):
        if d.endswith(unit) and d[: -len(unit)].replace(".", "", 1).isdigit():
            return float(d[: -len(unit)]) * mult
    return float(d)


def journal_less_ext4(path):
    """Whether `path` is on ext4 without a journal. There, creating a file
    within 60 s of deletions (360 s while the inode table block is dirty)
    scans past every recently deleted inode (fs/ext4/ialloc.c,
    recently_deleted); measured on the test VMs, it doubled the nodes' CPU
    on 1 MiB PUTs (BENCHMARKS.md, "Deleted files slow the next run")."""
    path = os.path.realpath(path)
    mounts = []
    with open("/proc/mounts") as f:
        for line in f:
            dev, point, fstype = line.split()[:3]
            if path == point or path.startswith(point.rstrip("/") + "/"):
                mounts.append((len(point), fstype))
    if not mounts or max(mounts)[1] != "ext4":
        return False
    st = os.stat(path).st_dev
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{os.major(st)}:{os.minor(st)}"))
    try:
        journals = os.listdir("/proc/fs/jbd2")
    except OSError:
        journals = []
    return not any(j.startswith(name + "-") for j in journals)


def settle_deletions(path, seconds):
    """On ext4 without a journal, writes back what is dirty and waits out
    the window in which earlier deletions (a previous run's clean-up, a
    test suite) slow every file the cluster creates: 360 s, because the
    cluster's own creations dirty the inode table blocks again, which
    stretches the window from 60 s to 360 s. The seconds waited."""
    if seconds <= 0 or not journal_less_ext4(path):
        return 0
    print(f"{path} is ext4 without a journal: waiting {seconds} s so earlier deletions "
          "do not slow file creation...", file=sys.stderr)
    subprocess.run(["sync"])
    time.sleep(seconds)
    return seconds


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass


def timed(cluster, moved, fn):
    meter = CpuMeter(cluster.servers())
    t = time.monotonic()
    fn()
    secs = time.monotonic() - t
    return {"seconds": round(secs, 2), "mib_per_s": round(moved / MIB / secs, 1), "cpu": meter.stop(moved)}


def cli_bench(cluster, src, size, report):
    print("CLI put/get...", file=sys.stderr)
    cluster.run("bucket", "create", "cli")
    report["cli"]["put"] = timed(cluster, size, lambda: cluster.run("put", src, "cli/big"))
    drop_caches()
    back = f"{cluster.root}/cli-back"
    report["cli"]["get"] = timed(cluster, size, lambda: cluster.run("get", "cli/big", back))
    if subprocess.run(["cmp", "-s", src, back]).returncode != 0:
        raise SystemExit("the CLI read back different bytes")
    os.remove(back)


def fuse_bench(cluster, src, size, files, report):
    print("FUSE mount...", file=sys.stderr)
    cluster.run("bucket", "create", "mounted")
    mnt = f"{cluster.root}/mnt"
    os.makedirs(mnt)
    cluster.spawn("mount", "mount", "mounted", mnt, "--foreground")
    for _ in range(100):
        if any(f" {mnt} " in line for line in open("/proc/self/mountinfo")):
            break
        time.sleep(0.1)
    else:
        raise SystemExit("the mount did not appear")
    dd = ["dd", f"if={src}", f"of={mnt}/big", "bs=1M", "conv=fsync", "status=none"]
    report["fuse"]["write"] = timed(cluster, size, lambda: subprocess.run(dd, check=True))
    drop_caches()
    rd = ["dd", f"if={mnt}/big", "of=/dev/null", "bs=1M", "status=none"]
    report["fuse"]["read"] = timed(cluster, size, lambda: subprocess.run(rd, check=True))
    os.makedirs(f"{mnt}/small")
    data = os.urandom(4096)
    t = time.monotonic()
    for i in range(files):
        with open(f"{mnt}/small/f{i:06d}", "wb") as f:
            f.write(data)
    report["fuse"]["creates_per_s"] = round(files / (time.monotonic() - t), 1)
    subprocess.run(["fusermount3", "-u", "-z", mnt])


def status(cluster):
    return json.loads(cluster.run("status", "--json"))


def repair_bench(cluster, report):
    print("repair of one lost node...", file=sys.stderr)
    victim = "node3"
    pids = cluster.servers()
    cluster.procs[victim].send_signal(signal.SIGKILL)
    cluster.procs[victim].wait()
    killed = time.monotonic()
    while [n["state"] for n in status(cluster)["nodes"]].count("out") != 1:
        time.sleep(0.2)
    out = time.monotonic()
    before = status(cluster)["repair"]["rebuilt_bytes"]
    meter = CpuMeter({n: p for n, p in pids.items() if n != victim})
    while True:
        s = status(cluster)
        if s["chunks"]["healthy"] == s["chunks"]["total"] and s["repair"]["pending_fragments"] == 0:
            break
        time.sleep(0.5)
    secs = time.monotonic() - out
    rebuilt = status(cluster)["repair"]["rebuilt_bytes"] - before
    report["repair"] = {
        "kill_to_out_s": round(out - killed, 1), "seconds": round(secs, 2),
        "rebuilt_bytes": rebuilt, "mib_per_s": round(rebuilt / MIB / secs, 1), "cpu": meter.stop(rebuilt),
    }


def ratio(value, limit):
    return f"{value / limit:.0%}" if value and limit else "-"


def print_report(r):
    m = r["machine"]
    disk, quic = m["disk_write_fdatasync_mib_s"], m["quic_loopback_mib_s"]
    ec_put_limit = disk / 1.5
    print(f"\nmachine ({m['cores']} cores): disk write+fdatasync {disk:.0f} MiB/s, "
          f"4 KiB synced writes {m['disk_sync_4k_writes_per_s']:.0f}/s, memcpy {m['memcpy_mib_s']:.0f} MiB/s, "
          f"TCP {m['tcp_loopback_mib_s']:.0f} MiB/s, QUIC+TLS {quic:.0f} MiB/s "
          f"({m['quic_cpu_s_per_gib']:.2f} CPU s/GiB)")
    rows = []
    for s in r["s3"]:
        if s["size"] == "4KiB":
            limit, lname, value, unit = ((3 * m["disk_sync_4k_writes_per_s"], "3 x 4 KiB synced writes/s")
                                         if s["op"] == "PUT" else (5000, "goal 5,000/s")) + (s["ops_per_s"], "ops/s")
        elif s["op"] == "PUT":
            limit, lname, value, unit = ec_put_limit, "disk / 1.5", s["mib_per_s"], "MiB/s"
        else:
            limit, lname, value, unit = quic, "QUIC loopback", s["mib_per_s"], "MiB/s"
        c = {k: (round(v, 1) if v is not None else None) for k, v in s["cpu_s_per_gib"].items()}
        rows.append((f"S3 {s['op']} {s['size']} x{s['concurrency']}", f"{value:.1f} {unit}", lname, f"{limit:.0f}", ratio(value, limit),
                     f"gw {c['gateway']}, meta {c['meta']}, nodes {c['nodes']}, client {c['client']}"))
    for b in r.get("boto3", []):
        mib = b["size"] // MIB
        limit, lname = (ec_put_limit, "disk / 1.5") if b["op"] == "PUT" else (quic, "QUIC loopback")
        per = ", ".join(f"{k} {v['cpu_s_per_gib']}" for k, v in b["cpu"].items() if k != "servers")
        rows.append((f"boto3 {b['op']} {mib} MiB x{b['threads']}", f"{b['mib_per_s']:.1f} MiB/s", lname,
                     f"{limit:.0f}", ratio(b["mib_per_s"], limit), per))
    for name, key, limit, lname in (("CLI put 1 GiB", ("cli", "put"), ec_put_limit, "disk / 1.5"),
                                    ("CLI get 1 GiB", ("cli", "get"), quic, "QUIC loopback"),
                                    ("mount write 1 GiB", ("fuse", "write"), ec_put_limit, "disk / 1.5"),
                                    ("mount read 1 GiB", ("fuse", "read"), quic, "QUIC loopback")):
        x = r.get(key[0], {}).get(key[1])
        if x:
            c = x["cpu"]
            per = ", ".join(f"{k} {v['cpu_s_per_gib']}" for k, v in c.items() if k != "servers")
            rows.append((name, f"{x['mib_per_s']:.1f} MiB/s", lname, f"{limit:.0f}", ratio(x["mib_per_s"], limit), per))
    if "creates_per_s" in r.get("fuse", {}):
        rows.append(("mount creates, 4 KiB files", f"{r['fuse']['creates_per_s']:.0f}/s", "-", "-", "-", ""))
    if r.get("repair"):
        x = r["repair"]
        limit = min(disk, quic / 4)
        rows.append(("repair, rebuilt", f"{x['mib_per_s']:.1f} MiB/s", "min(disk, QUIC / 4)", f"{limit:.0f}",
                     ratio(x["mib_per_s"], limit), f"servers {x['cpu']['servers']['cpu_s']} CPU s"))
    head = ("figure", "value", "bounded by", "limit", "share", "CPU s/GiB")
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
    for row in [head] + rows:
        print("  ".join(str(v).ljust(widths[i]) for i, v in enumerate(row)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--small-concurrency", type=int, default=64, help="in flight for objects of 4 KiB or less")
    ap.add_argument("--sizes", default="4KiB,1MiB,64MiB")
    ap.add_argument("--data-size", default="1GiB", help="bytes for the CLI and mount figures")
    ap.add_argument("--files", type=int, default=2000, help="small files created through the mount")
    ap.add_argument("--skip", default="", help="comma-separated: s3,boto3,cli,fuse,repair")
    ap.add_argument("--out", default="bench-all.json")
    ap.add_argument("--settle", type=int, default=365,
                    help="seconds to wait first on ext4 without a journal (0: do not wait)")
    ap.add_argument("--ip", default=IP, help="loopback address the cluster listens on")
    args = ap.parse_args()
    globals()["IP"] = args.ip
    args.sizes = [s for s in args.sizes.split(",") if s]
    skip = set(args.skip.split(","))
    root = tempfile.mkdtemp(prefix="tessera-bench-all.", dir="/var/tmp")
    settled = settle_deletions(root, args.settle)
    report = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "host": os.uname().nodename,
              "kernel": os.uname().release, "settled_after_deletions_s": settled,
              "s3": [], "boto3": [], "cli": {}, "fuse": {}}
    print("machine limits...", file=sys.stderr)
    report["machine"] = machine_limits(args.bin, root)
    cluster = Cluster(args.bin, root)
    try:
        if "s3" not in skip:
            s3_bench(cluster, args, report)
        if "boto3" not in skip:
            boto3_bench(cluster, args, report)
        size = size_bytes(args.data_size)
        src = f"/dev/shm/tessera-bench-all-src.{os.getpid()}"
        with open(src, "wb") as f:
            for _ in range(size // MIB):
                f.write(os.urandom(MIB))
        try:
            if "cli" not in skip:
                cli_bench(cluster, src, size, report)
            if "fuse" not in skip:
                fuse_bench(cluster, src, size, args.files, report)
        finally:
            os.remove(src)
        if "repair" not in skip:
            repair_bench(cluster, report)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", f"{root}/mnt"], stderr=subprocess.DEVNULL)
        cluster.stop()
        subprocess.run(["rm", "-rf", root])
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print_report(report)
    print(f"\n(JSON in {args.out})")


if __name__ == "__main__":
    main()
