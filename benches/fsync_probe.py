#!/usr/bin/env python3
"""This disk's own fsync latency, the floor under every durable figure: appends N records of
100 bytes to a file in DIR at RATE per second, fsync after each, and prints p50/p99/p99.9/max
in ms as one JSON line. Usage: fsync_probe.py DIR [N=1500] [RATE=50]"""
import json
import os
import sys
import time

d = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 50.0
os.makedirs(d, exist_ok=True)
path = os.path.join(d, "fsync-probe.bin")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
samples = []
t0 = time.monotonic()
for i in range(n):
    due = t0 + i / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    start = time.perf_counter()
    os.write(fd, b"x" * 100)
    os.fsync(fd)
    samples.append((time.perf_counter() - start) * 1000)
os.close(fd)
os.unlink(path)
samples.sort()


def q(p):
    return round(samples[min(len(samples) - 1, int(p * len(samples)))], 3)


print(json.dumps({"samples": n, "rate": rate, "p50_ms": q(0.5), "p99_ms": q(0.99),
                  "p999_ms": q(0.999), "max_ms": round(samples[-1], 3)}))
