#!/usr/bin/env python3
"""Writes the peer table (benches/run-peers.sh) into BENCHMARKS.md between the peers markers.

Usage: peers_table.py OUT_DIR BENCHMARKS.md. Every run is listed; the summary gives each
figure's range over the runs (never the best run alone)."""
import datetime
import glob
import json
import os
import sys

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
PEERS = [("push", "push (this server)"), ("mqtt", "Mosquitto"), ("nats", "NATS")]
ROWS = [
    ("idle", "idle, 18,000 connections, each in one room / subscribed to one topic"),
    ("fanout-10k-max", "fan-out, 10,000 subscribers, 600 x 100 B at max rate (32 publishers)"),
    ("fanout-10k-50", "fan-out, 10,000 subscribers, 500 x 100 B at 50 msg/s"),
    ("fanout-18k-max", "fan-out, 18,000 subscribers, 300 x 100 B at max rate (32 publishers)"),
    ("fanout-18k-50", "fan-out, 18,000 subscribers, 250 x 100 B at 50 msg/s"),
    ("one-50", "one subscriber, 500 x 100 B at 50 msg/s"),
    ("one-50-transient", "one subscriber, 50 msg/s, transient (this server only)"),
    ("one-50-binary", "one subscriber, 50 msg/s, durable, published with binary PUBLISH (this server only)"),
    ("one-50-transient-binary", "one subscriber, 50 msg/s, transient, published with binary PUBLISH (this server only)"),
]


def load(out):
    runs = []
    for meta in sorted(glob.glob(os.path.join(out, "*.meta"))):
        m = json.load(open(meta))
        txt = meta[: -len(".meta")] + ".txt"
        result = None
        try:
            last = open(txt).read().strip().splitlines()[-1]
            result = json.loads(last)
        except (OSError, IndexError, ValueError):
            pass
        if result is None:
            err = meta[: -len(".meta")] + ".err"
            tail = open(err).read().strip().splitlines()[-1:] if os.path.exists(err) else []
            m["failure"] = tail[0] if tail else "no output"
        m["result"] = result
        runs.append(m)
    return runs


def fmt(x, digits=0):
    if x is None:
        return "-"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def headline(row, r):
    """The figures a summary cell shows, as (label, value, digits)."""
    if r is None:
        return []
    if row == "idle":
        return [
            ("B per connection", r.get("server_rss_per_connection_bytes"), 0),
            ("connects/s", r.get("connects_per_second"), 0),
        ]
    lat = r.get("latency", {})
    figs = [
        ("lost", r.get("deliveries_lost"), 0),
        ("p50 ms", lat.get("p50_ms"), 2),
        ("p99 ms", lat.get("p99_ms"), 2),
    ]
    if not row.startswith("one"):
        figs = [
            ("deliveries/s", r.get("deliveries_per_second"), 0),
            ("us CPU/delivery", r.get("server_cpu_us_per_delivery"), 2),
            ("publish msg/s", r.get("publish_rate_achieved"), 0),
        ] + figs
    return figs


def cell(row, results):
    got = [headline(row, r) for r in results if r is not None]
    if not got:
        return "no result"
    parts = []
    for i, (label, _, digits) in enumerate(got[0]):
        vals = [g[i][1] for g in got if g[i][1] is not None]
        if not vals:
            continue
        lo, hi = min(vals), max(vals)
        rng = fmt(lo, digits) if lo == hi else f"{fmt(lo, digits)}-{fmt(hi, digits)}"
        parts.append(f"{label} {rng}")
    failed = sum(r is None for r in results)
    if failed:
        parts.append(f"{failed} run(s) without a result")
    return "; ".join(parts)


def detail(row, m):
    r = m["result"]
    if r is None:
        return f"exit {m['exit']}: {m.get('failure', '')}"
    if row == "idle":
        return (
            f"{r['connections_ok']}/{r['connections_requested']} connected; "
            f"RSS {fmt(r.get('server_rss_before_bytes'))} -> {fmt(r.get('server_rss_after_bytes'))} B, "
            f"**{fmt(r.get('server_rss_per_connection_bytes'))} B per connection**; "
            f"{fmt(r['connects_per_second'])} connects/s; "
            f"server CPU connecting {r.get('server_cpu_seconds_connecting')} s"
        )
    lat = r["latency"]
    return (
        f"received {fmt(r['deliveries_received'])}/{fmt(r['deliveries_expected'])} "
        f"(lost {fmt(r['deliveries_lost'])}, connections lost {r['connections_lost']}); "
        f"{fmt(r['deliveries_per_second'])} deliveries/s; "
        f"server CPU **{r.get('server_cpu_us_per_delivery')} us/delivery**; "
        f"latency p50 {lat['p50_ms']} / p99 **{lat['p99_ms']}** / max {lat['max_ms']} ms; "
        f"publish rate {fmt(r['publish_rate_achieved'])}/s; "
        f"server RSS after {fmt((r.get('server_rss_bytes') or 0) / 1048576, 1)} MiB"
        + (f"; publish failures {r['publish_failures']}" if r["publish_failures"] else "")
    )


def render(out):
    runs = load(out)
    versions = dict(
        line.strip().split("=", 1) for line in open(os.path.join(out, "versions")) if "=" in line
    )
    rounds = max((m["run"] for m in runs), default=0)
    lines = [
        BEGIN,
        f"Run {datetime.date.today()} by `benches/run-peers.sh` (rounds: {rounds}; rows and "
        "servers interleaved, a fresh server for every run); raw output in "
        "`benches/out/peers/` (not committed).",
        "",
        f"Versions: push {versions.get('push')} (sled store, defaults), Mosquitto "
        f"{versions.get('mosquitto')} and nats-server {versions.get('nats')} from Debian's "
        f"packages; {versions.get('machine')}, servers and harness on the same cores."
        + (f" Rows added later: push {versions['push_added']}." if "push_added" in versions else ""),
        "",
        "Configs: push `--listen 127.0.0.1:7100 --http-listen 127.0.0.1:7180 --data-dir ...` "
        "(durable room messages, publishers over the HTTP API, each waiting for its 200); "
        "Mosquitto `listener 1883 127.0.0.1`, `allow_anonymous true`, "
        "`connection_messages false`, `log_type error` (QoS 0, clean sessions); nats-server "
        "`listen: 127.0.0.1:4222` (core NATS, no JetStream). Peer publishers send without "
        "waiting (QoS 0 PUBLISH / PUB) and end with a PINGREQ / PING barrier; subscribers are "
        "the harness's MQTT and NATS clients (`benches/src/bin/push-bench/mqtt.rs`, `nats.rs`).",
        "",
        "| scenario | " + " | ".join(name for _, name in PEERS) + " |",
        "|---|" + "---|" * len(PEERS),
    ]
    for row, title in ROWS:
        cells = []
        for peer, _ in PEERS:
            results = [m["result"] for m in runs if m["row"] == row and m["peer"] == peer]
            cells.append(cell(row, results) if results else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "Every run:", "", "| scenario | server | round | command | result |", "|---|---|---|---|---|"]
    names = dict(PEERS)
    for row, _ in ROWS:
        for peer, _ in PEERS:
            for m in sorted(
                (m for m in runs if m["row"] == row and m["peer"] == peer), key=lambda m: m["run"]
            ):
                lines.append(
                    f"| {row} | {names[peer]} | {m['run']} | `{m['cmd']}` | {detail(row, m)} |"
                )
    lines.append(END)
    return "\n".join(lines)


def main():
    out, bench = sys.argv[1], sys.argv[2]
    table = render(out)
    text = open(bench).read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + table + tail
    else:
        text = text.rstrip("\n") + "\n\n## Peers in the same harness (issue 19)\n\n" + table + "\n"
    open(bench, "w").write(text)
    print(table)


if __name__ == "__main__":
    main()
