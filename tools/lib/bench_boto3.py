#!/usr/bin/env python3
"""boto3 load for tools/bench-all: PUTs of one object size from THREADS
threads for DURATION seconds, then GETs of what was written, as the issue's
figures were first taken (boto3's put_object and get_object, one request per
object, every body distinct). Prints one JSON object per phase.

  bench_boto3.py ENDPOINT BUCKET SIZE THREADS DURATION_S
(credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""

import json
import os
import sys
import threading
import time

import boto3
from botocore.config import Config


def main():
    endpoint, bucket, size, threads, duration = sys.argv[1:6]
    size, threads, duration = int(size), int(threads), float(duration)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(max_pool_connections=threads * 2, s3={"addressing_style": "path"},
                                    retries={"max_attempts": 1}))
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        pass
    base = os.urandom(size)
    written = [[] for _ in range(threads)]
    errors = [0]

    def phase(op, work):
        stop = time.monotonic() + duration
        done = [0] * threads

        def worker(w):
            n = 0
            while time.monotonic() < stop:
                try:
                    work(w, n)
                    done[w] += 1
                except Exception as e:  # counted, reported; the phase goes on
                    errors[0] += 1
                    print(f"{op} failed: {e}", file=sys.stderr)
                n += 1

        t0, c0 = time.monotonic(), os.times()
        ts = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        secs = time.monotonic() - t0
        c1 = os.times()
        ops = sum(done)
        return {"op": op, "size": size, "threads": threads, "ops": ops, "seconds": round(secs, 2),
                "mib_per_s": round(ops * size / (1 << 20) / secs, 1),
                "mb_per_s": round(ops * size / 1e6 / secs, 1), "errors": errors[0],
                "client_cpu_s": round((c1.user - c0.user) + (c1.system - c0.system), 2)}

    def put(w, n):
        # The thread and sequence number in the first 8 bytes of every 4 KiB
        # block: no two objects share a block.
        stamp = ((w << 40) | n).to_bytes(8, "little")
        body = bytearray(base)
        for off in range(0, size, 4096):
            body[off:off + 8] = stamp
        key = f"boto3-{size}/{w:03d}/{n:08d}"
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
        written[w].append(key)

    def get(w, n):
        keys = written[w]
        body = s3.get_object(Bucket=bucket, Key=keys[n % len(keys)])["Body"]
        got = 0
        while True:
            piece = body.read(1 << 20)
            if not piece:
                break
            got += len(piece)
        if got != size:
            raise RuntimeError(f"GET returned {got} bytes, not {size}")

    print(json.dumps(phase("PUT", put)))
    if not all(written):
        raise SystemExit("a thread wrote nothing to read back")
    print(json.dumps(phase("GET", get)))
    for keys in written:
        for k in keys:
            s3.delete_object(Bucket=bucket, Key=k)


if __name__ == "__main__":
    main()
