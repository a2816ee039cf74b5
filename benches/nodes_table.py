#!/usr/bin/env python3
"""Writes the rows of benches/run-nodes.sh (benches/out/nodes/<row>.txt, .cmd, .extra) into
BENCHMARKS.md between the nodes markers. Usage: nodes_table.py OUT_DIR BENCHMARKS.md ROW..."""
import datetime
import json
import pathlib
import sys

out, target, names = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]


def last_json(name):
    """The row's report (the last line, when the row finished)."""
    try:
        r = json.loads((out / f"{name}.txt").read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None
    return r if "scenario" in r else None


def text(name, ext):
    try:
        return (out / f"{name}.{ext}").read_text().strip()
    except OSError:
        return ""


def n(x):
    """A count or rate with thousands separators (no ".0")."""
    return f"{x:,.0f}" if isinstance(x, (int, float)) else "?"


def mb(b):
    return f"{b / 1e6:,.1f} MB" if b is not None else "?"


def latency(r):
    lat = r.get("latency", {})
    return f"p50 {lat.get('p50_ms')} / p99 **{lat.get('p99_ms')}** / max {lat.get('max_ms')} ms"


def delivered(r):
    return (f"{r.get('deliveries_received'):,} / {r.get('deliveries_expected'):,} delivered, "
            f"lost {r.get('deliveries_lost')}, twice or reordered {r.get('duplicates_or_reordered')}")


def figure(name, r):
    if name == "idle":
        return (f"{r['connections_ok']:,} / {r['connections_requested']:,} connected, "
                f"**{n(r['connects_per_second'])} connects/s**; nodes RSS {mb(r.get('server_rss_before_bytes'))} -> "
                f"**{mb(r.get('server_rss_after_bytes'))}** (**{n(r.get('server_rss_per_connection_bytes'))} B per "
                f"connection**), PSS {mb(r.get('server_pss_after_bytes'))}; lost while idle "
                f"{r['connections_lost_while_idle']}")
    if name == "soak":
        s = r.get("samples", [])
        late = [x for x in s if x["t_s"] >= 300] or s
        span = lambda k: f"{min(x[k] for x in late) / 1e6:,.0f}-{max(x[k] for x in late) / 1e6:,.0f} MB"
        storage = [x for x in late if x.get("storage_bytes") is not None]
        nats = f"; NATS storage {span('storage_bytes')}" if storage else ""
        return (f"{delivered(r)}; {r.get('churn_cycles_ok'):,} churn cycles, {r.get('churn_cycles_failed')} failed; "
                f"from minute 5: nodes RSS {span('rss_bytes')}, descriptors "
                f"{min(x['fds'] for x in late):,}-{max(x['fds'] for x in late):,}{nats}")
    line = f"{delivered(r)}; {n(r.get('deliveries_per_second'))} deliveries/s; {latency(r)}"
    if "accepted_per_second" in r:
        line = f"**{n(r['accepted_per_second'])} accepted msg/s**; " + line
    if r.get("server_cpu_us_per_delivery") is not None:
        line += f"; {r['server_cpu_us_per_delivery']} us of node CPU per delivery"
    storm = r.get("storm")
    if storm and storm.get("reconnects"):
        line += (f"; **{storm['reconnects']:,} receivers reconnected, the last {storm['all_reconnected_after_s']} s "
                 f"after the kill** ({n(storm['reconnects_per_second'])}/s)")
    return line


lines = [f"Run {datetime.date.today()} by `benches/run-nodes.sh`; raw output in `benches/out/nodes/` "
         "(not committed).", "",
         "| row | command (`push-bench ...`) | figure | descriptors, NATS |", "|---|---|---|---|"]
for name in names:
    r = last_json(name)
    if r is None:
        lines.append(f"| {name} | `{text(name, 'cmd')}` | no result (see the raw output) | |")
        continue
    extra = text(name, "extra").replace("nodes: ", "").replace("|", "/")
    lines.append(f"| {name} | `{text(name, 'cmd')}` | {figure(name, r)} | {extra} |")
block = "\n".join(lines)
doc = target.read_text()
begin, end = "<!-- nodes:begin -->", "<!-- nodes:end -->"
if begin in doc and end in doc:
    doc = doc.split(begin)[0] + begin + "\n" + block + "\n" + end + doc.split(end)[1]
else:
    doc += "\n" + begin + "\n" + block + "\n" + end + "\n"
target.write_text(doc)
print(block)
