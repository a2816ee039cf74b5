#!/usr/bin/env python3
"""Turns `cargo bench` (criterion) output into a markdown table: median time, frames/s, MiB/s."""
import re, sys

text = sys.stdin.read()
pat = re.compile(r"^(\S+/\S+)\s*\n?\s*time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]\s*\n\s*thrpt:\s+\[\S+ \S+ (\S+) (\S+)", re.M)
scale = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
tput = {"B/s": 1 / 2**20, "KiB/s": 1 / 1024, "MiB/s": 1.0, "GiB/s": 1024.0}
print("| bench | median time | frames/s | payload MiB/s |")
print("|---|---:|---:|---:|")
for name, t, unit, th, thunit in pat.findall(text):
    secs = float(t) * scale[unit]
    print(f"| {name} | {t} {unit} | {1/secs:,.0f} | {float(th)*tput[thunit]:,.0f} |")
