#!/usr/bin/env python3
"""A collector stand-in for benchmarks: accepts OTLP/HTTP export requests on 127.0.0.1:PORT,
answers 200 and, when stopped (SIGTERM), prints how many requests and bytes it received."""
import http.server
import signal
import sys

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
seen = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        seen["requests"] += 1
        seen["bytes"] += len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    print(f"otlp sink: {seen['requests']} export requests, {seen['bytes']} bytes", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Sink).serve_forever()
