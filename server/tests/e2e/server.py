"""Starts a real push-server binary on free loopback ports for the end-to-end tests."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

SECRET = "e2e-secret-0123456789abcdef"
API_TOKEN = "e2e-api-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A push-server process; `restart()` keeps its data directory and ports."""

    def __init__(self, binary, dev=False):
        self.binary = binary
        self.dev = dev
        self.data = tempfile.mkdtemp(prefix="push-e2e-")
        self.tcp = free_port()
        self.http = free_port()
        self.proc = None
        self.log = open(os.path.join(self.data, "server.log"), "ab")

    @property
    def base(self):
        return f"http://127.0.0.1:{self.http}"

    def start(self):
        args = [self.binary, "--listen", f"127.0.0.1:{self.tcp}",
                "--http-listen", f"127.0.0.1:{self.http}", "--data-dir", os.path.join(self.data, "d")]
        env = dict(os.environ, RUST_LOG="warn")
        if not self.dev:
            env.update(PUSH_JWT_SECRET=SECRET, PUSH_API_TOKENS=API_TOKEN)
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise RuntimeError("server did not start; see " + self.log.name)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def request(self, method, path, body=None, token=None):
        token = token or (("dev-api-token" if self.dev else API_TOKEN))
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": "Bearer " + token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def push(self, body):
        status, v = self.request("POST", "/api/v1/push", body)
        assert status == 200, (status, v)
        return v
