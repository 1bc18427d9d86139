#!/usr/bin/env python3
"""Interleaved A/B of two Tessera binaries on the S3 path: each round starts a
fresh cluster of separate processes (bench_all's Cluster: meta, 7 nodes,
ec:4+2, the gateway) from one binary, runs `tessera bench` PUT then GET for
each size, and stops it. Rounds follow ORDER (ABBA, ABBAAB...), so a slow
hour on a shared machine falls on both sides. The rounds' directories are
deleted only at the end: on ext4 without a journal, files created within
minutes of mass deletions cost several times the CPU (BENCHMARKS.md,
"Deleted files slow the next run"), which would charge one round's clean-up
to the next. Prints every round and the medians per side; writes JSON.
Standard library only."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_all  # noqa: E402

FIGURES = ("mib_per_s", "gateway", "nodes", "meta", "servers", "client")


def shown(value):
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def one_round(binary, args):
    root = tempfile.mkdtemp(prefix="tessera-bench-ab.", dir="/var/tmp")
    cluster = bench_all.Cluster(binary, root)
    report = {"s3": []}
    try:
        bench_all.s3_bench(cluster, args, report)
    finally:
        cluster.stop()
    subprocess.run(["sync"])
    rows = {}
    for r in report["s3"]:
        cpu = r["cpu_s_per_gib"]
        rows[f"{r['size']} {r['op']}"] = {"mib_per_s": r["mib_per_s"], "ops_per_s": r["ops_per_s"],
                                          "errors": r["errors"], **cpu}
    return root, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="binary A")
    ap.add_argument("b", help="binary B")
    ap.add_argument("--order", default="ABBA", help="rounds, as a string of A and B")
    ap.add_argument("--sizes", default="1MiB,64MiB")
    ap.add_argument("--duration", default="8s", help="each phase of `tessera bench`")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--small-concurrency", type=int, default=64)
    ap.add_argument("--settle", type=int, default=365,
                    help="seconds to wait first on ext4 without a journal (0: do not wait)")
    ap.add_argument("--out", default="bench-ab.json")
    args = ap.parse_args()
    if set(args.order) - {"A", "B"}:
        ap.error("--order takes only A and B")
    bins = {"A": os.path.abspath(args.a), "B": os.path.abspath(args.b)}
    bench = SimpleNamespace(sizes=[s for s in args.sizes.split(",") if s], duration=args.duration,
                            concurrency=args.concurrency, small_concurrency=args.small_concurrency)
    settled = bench_all.settle_deletions("/var/tmp", args.settle)
    rounds, roots = [], []
    try:
        for i, side in enumerate(args.order):
            print(f"round {i + 1}/{len(args.order)}: {side} ({bins[side]})", file=sys.stderr)
            root, rows = one_round(bins[side], bench)
            roots.append(root)
            rounds.append({"side": side, "started": time.strftime("%H:%M:%S"), "figures": rows})
            for name, row in rows.items():
                print(f"  {side} {name}: " + ", ".join(f"{k} {shown(row.get(k))}" for k in FIGURES),
                      file=sys.stderr)
    finally:
        for root in roots:
            subprocess.run(["rm", "-rf", root])
    medians = {}
    for side in "AB":
        mine = [r["figures"] for r in rounds if r["side"] == side]
        medians[side] = {}
        for name in (mine[0] if mine else {}):
            medians[side][name] = {
                k: round(statistics.median(r[name][k] for r in mine if r.get(name, {}).get(k) is not None), 2)
                for k in FIGURES if any(r.get(name, {}).get(k) is not None for r in mine)}
    out = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "binaries": bins, "order": args.order,
           "settled_after_deletions_s": settled, "rounds": rounds, "medians": medians}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"medians of {args.order.count('A')} A and {args.order.count('B')} B rounds "
          f"(MiB/s, then CPU s/GiB):")
    names = list(medians["A"] or medians["B"])
    for name in names:
        for k in FIGURES:
            a = medians["A"].get(name, {}).get(k)
            b = medians["B"].get(name, {}).get(k)
            ratio = f"{b / a:.2f}" if a and b else "-"
            print(f"  {name:16} {k:10} A {a!s:>9}  B {b!s:>9}  B/A {ratio}")
    print(f"(JSON in {args.out})")


if __name__ == "__main__":
    main()
