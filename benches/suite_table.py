#!/usr/bin/env python3
"""Writes the load-suite results (benches/out/*.json) into BENCHMARKS.md between markers."""
import json, os, sys, datetime

out, target = sys.argv[1], sys.argv[2]

def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.loads(f.read())
    except Exception:
        return None

def cmd(name):
    try:
        return open(os.path.join(out, name + ".cmd")).read().strip()
    except Exception:
        return "?"

rows = []
idle = load("idle")
if idle:
    rows.append(("idle 18,000", cmd("idle"),
        f"{idle.get('connections_ok')} ok / {idle.get('connections_failed')} failed; "
        f"server RSS per idle connection **{idle.get('server_rss_per_connection_bytes')} B** "
        f"({idle.get('server_rss_per_connection_bytes', 0)/1024:.2f} KiB); "
        f"connects/s {idle.get('connects_per_second')} ({idle.get('handshakes_in_flight')} in flight)"))
for name, label in [("fanout-50", "fanout 10,000 x 100 B, 50 msg/s"),
                    ("fanout-max", "fanout 10,000 x 100 B, max rate"),
                    ("unicast", "durable unicast 10,000 msg/s, sled"),
                    ("unicast-redb", "durable unicast 10,000 msg/s, redb"),
                    ("durable-max", "durable unicast max, 100 users per request, sled"),
                    ("durable-max-redb", "durable unicast max, 100 users per request, redb")]:
    r = load(name)
    if not r:
        continue
    lat = r.get("latency", {})
    extra = ""
    if "accepted_per_second" in r:
        extra = f"**{r['accepted_per_second']} accepted messages/s**; "
    rows.append((label, cmd(name), extra +
        f"received {r.get('deliveries_received')}/{r.get('deliveries_expected')} "
        f"(lost {r.get('deliveries_lost')}, dup/reordered {r.get('duplicates_or_reordered')}); "
        f"{r.get('deliveries_per_second')} deliveries/s; publish rate {r.get('publish_rate_achieved')}/s; "
        f"latency p50 {lat.get('p50_ms')} / p90 {lat.get('p90_ms')} / p99 **{lat.get('p99_ms')}** / "
        f"p99.9 {lat.get('p999_ms')} / max {lat.get('max_ms')} ms; "
        f"server CPU **{r.get('server_cpu_us_per_delivery')} us/delivery** ({r.get('server_cpu_seconds')} s)"))
churn = load("churn")
if churn:
    rows.append(("churn 1,000/s for 30 s", cmd("churn"),
        f"{churn.get('cycles_ok')} cycles ok, {churn.get('cycles_failed')} failed, "
        f"{churn.get('cycles_per_second')}/s; server RSS {churn.get('server_rss_before_bytes')} -> "
        f"{churn.get('server_rss_after_bytes')} B; fds {churn.get('server_fds_before')} -> {churn.get('server_fds_after')}"))

for store in ["sled", "redb"]:
    d = load("disk-" + store)
    if d:
        rows.append((f"disk per stored message, {store}", cmd("disk-" + store),
            f"{d['disk_bytes_before']} -> {d['disk_bytes_after']} B for {d['messages']} messages of "
            f"{d['payload_bytes']} B: **{d['bytes_per_message']} B per message**"))

lines = [f"Run {datetime.date.today()} by `benches/run-suite.sh`; raw output in `benches/out/` (not committed).", "",
         "| scenario | command (`target/release/push-bench ...`) | result |", "|---|---|---|"]
for label, c, res in rows:
    lines.append(f"| {label} | `{c}` | {res} |")
block = "\n".join(lines)
text = open(target).read()
begin, end = "<!-- suite:begin -->", "<!-- suite:end -->"
if begin in text and end in text:
    pre = text.split(begin)[0]
    post = text.split(end)[1]
    text = pre + begin + "\n" + block + "\n" + end + post
else:
    text += "\n## Load suite (issues 3, 4 and 5)\n\n" + begin + "\n" + block + "\n" + end + "\n"
open(target, "w").write(text)
print(block)
