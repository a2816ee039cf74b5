"""A third-party WebSocket client (the `websockets` package) against /ws in both modes.

Run: python3 server/tests/e2e/ws_third_party.py target/debug/push-server
"""

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import sys
import time
import zlib

import websockets

from server import SECRET, Server


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(user):
    """An HS256 JWT minted here, independently of the Rust code."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": user, "exp": int(time.time()) + 3600}).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(b, i):
    n = shift = 0
    while True:
        n |= (b[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not b[i - 1] & 0x80:
            return n, i


def frame(ftype, body, seq=1, checksum=True):
    """One wire frame per SPEC.md §2, with a crc32 trailer (§8.1) when asked."""
    flags = 0x02 if checksum else 0
    length = len(body) + (4 if checksum else 0)
    head = b"PUSH" + struct.pack(">HBBII", 1, flags, ftype, length, seq)
    out = head + body
    if checksum:
        out += struct.pack(">I", zlib.crc32(out))
    return out


def parse(msg):
    """(type, seq, body) of a one-frame binary message; checks length and crc."""
    assert msg[:4] == b"PUSH", msg[:16]
    version, flags, ftype, length, seq = struct.unpack(">HBBII", msg[4:16])
    assert version == 1 and len(msg) == 16 + length, (version, length, len(msg))
    assert not flags & 0x05, "small frames are neither compressed nor fragmented"
    body = msg[16:]
    if flags & 0x02:
        body, crc = body[:-4], struct.unpack(">I", body[-4:])[0]
        assert zlib.crc32(msg[:-4]) == crc, "crc32 trailer"
    return ftype, seq, body


async def binary_mode(server):
    async with websockets.connect(f"ws://127.0.0.1:{server.http}/ws", subprotocols=["push.v1"]) as ws:
        assert ws.subprotocol == "push.v1"
        tok = token("pyuser").encode()
        hello = struct.pack(">HH", 1, 1) + varint(len(tok)) + tok + bytes([2]) + b"py" + varint(0)
        await ws.send(frame(0x01, hello, seq=5))
        ftype, seq, body = parse(await ws.recv())
        assert (ftype, seq) == (0x02, 5), (ftype, seq, body)
        server.push({"to": {"users": ["pyuser"]}, "kind": "alarm", "title": "T", "content": "C", "level": "error"})
        ftype, _, body = parse(await ws.recv())
        while ftype == 0x04:  # PING
            ftype, _, body = parse(await ws.recv())
        assert ftype == 0x06, ftype
        i = 16  # id
        assert body[i] == 0  # user stream
        position, i = read_varint(body, i + 1)
        _ts, i = read_varint(body, i)
        kind = body[i + 1:i + 1 + body[i]].decode()
        assert (position, kind) == (1, "alarm"), (position, kind)
        # ACK user@1, then the history shows it acknowledged.
        await ws.send(frame(0x07, varint(1) + bytes([0]) + varint(1), seq=6))
        for _ in range(100):
            _, h = server.request("GET", "/api/v1/history/users/pyuser")
            if h["acked"] == 1:
                break
            await asyncio.sleep(0.05)
        assert h["acked"] == 1, h
        # Text is refused on a binary connection with close code 1003.
        await ws.send('{"op":"pong"}')
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected a close")
        except websockets.ConnectionClosed as e:
            assert e.rcvd.code == 1003, e.rcvd
    print("binary mode: ok")


async def json_mode(server):
    url = f"ws://127.0.0.1:{server.http}/ws"
    async with websockets.connect(url, subprotocols=["push.v1.json"]) as ws:
        assert ws.subprotocol == "push.v1.json"
        await ws.send(json.dumps({"op": "hello", "token": token("jsonuser")}))
        welcome = json.loads(await ws.recv())
        assert welcome["op"] == "welcome" and welcome["user"] == "jsonuser", welcome
        await ws.send(json.dumps({"op": "join", "room": "py-room", "seq": 2}))
        assert json.loads(await ws.recv()) == {"op": "ok", "seq": 2, "tail": 0}
        server.push({"to": {"room": "py-room"}, "kind": "notification", "title": "Hi", "content": "room msg", "level": "info"})
        m = json.loads(await ws.recv())
        # The phase-1 format: type, id, timestamp, data{title, content, level}.
        assert m["type"] == "notification" and m["data"] == {"title": "Hi", "content": "room msg", "level": "info"}, m
        assert isinstance(m["id"], str) and m["timestamp"] > 1.6e12 and m["stream"] == "room:py-room"
        # The library's own keepalive ping is answered (websockets closes the connection if not).
        pong = await ws.ping()
        await asyncio.wait_for(pong, 10)
    # Offline, then reconnect with the token in the query string: the missed message replays.
    server.push({"to": {"users": ["jsonuser"]}, "kind": "text", "payload": "while away"})
    async with websockets.connect(url + "?token=" + token("jsonuser"), subprotocols=["push.v1.json"]) as ws:
        assert json.loads(await ws.recv())["op"] == "welcome"
        m = json.loads(await ws.recv())
        assert (m["data"], m["stream"], m["position"]) == ("while away", "user", 1), m
        await ws.send(json.dumps({"op": "ack", "stream": "user", "position": 1}))
        await ws.send("{not json")
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected a close")
        except websockets.ConnectionClosed as e:
            assert e.rcvd.code == 1007 and "invalid JSON" in e.rcvd.reason, e.rcvd
    # A bad token: auth_error, then close 4202.
    async with websockets.connect(url, subprotocols=["push.v1.json"]) as ws:
        await ws.send(json.dumps({"op": "hello", "token": "x.y.z"}))
        e = json.loads(await ws.recv())
        assert e["op"] == "auth_error" and e["name"] == "TOKEN_INVALID", e
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as c:
            assert c.rcvd.code == 4202, c.rcvd
    print("json mode: ok")


async def main(binary):
    server = Server(binary).start()
    try:
        await binary_mode(server)
        await json_mode(server)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
