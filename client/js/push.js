// push.js: browser SDK for the push server. Plain ES module, no dependencies.
//
// Speaks the WebSocket JSON mode (subprotocol "push.v1.json", SPEC.md §12) and falls back to
// long-polling (GET /api/v1/poll, SPEC.md §13) when WebSocket cannot be used. Reconnects with
// exponential backoff and jitter, resumes every stream from the last position it processed,
// re-joins rooms, and drops messages it has already delivered (by id).
//
//   import { PushClient } from "/sdk/push.js";
//   const client = new PushClient({ url: "http://127.0.0.1:7180", token });
//   client.onmessage = (m) => console.log(m.type, m.data, m.stream, m.position);
//   client.onstate = (s, detail) => console.log("state", s, detail);
//   client.connect();
//   client.join("lobby");

const SUBPROTOCOL = "push.v1.json";
// Close codes after which reconnecting cannot help (4000 + SPEC.md §10 code): AUTH_REQUIRED,
// TOKEN_INVALID, NO_COMMON_VERSION, KICKED; TOKEN_EXPIRED too unless `token` is a function
// that can fetch a fresh one.
const FATAL_CLOSE = new Set([4200, 4202, 4204, 4504]);
const TOKEN_EXPIRED = 4203;
const FATAL_HTTP = new Set([400, 401, 403, 404]);

/** A message as delivered: the phase-1 fields plus where it sits in its stream. */
// { type, id, timestamp, data | data_base64, stream: "user" | "broadcast" | "room:<name>", position }

export class PushClient {
  /**
   * @param {object} opts
   * @param {string} opts.url           server HTTP base, e.g. "http://127.0.0.1:7180"
   * @param {string} [opts.wsUrl]       WebSocket URL when not `${url}/ws` (e.g. a port of its own)
   * @param {string[]} [opts.fallbackUrls] other nodes of a cluster (HTTP bases, WebSocket at `/ws`): after a failed
   *                                    attempt the client tries the next one in turn, resuming where it left off
   * @param {string|function():Promise<string>|function():string} opts.token  user token, or a function returning one (called on every connect)
   * @param {"auto"|"ws"|"poll"} [opts.transport="auto"]  "auto" falls back to polling after repeated WebSocket failures
   * @param {boolean} [opts.autoAck=true]  acknowledge each user message after onmessage returns
   * @param {boolean} [opts.broadcast=true] receive broadcasts (resumed by position)
   * @param {number} [opts.minBackoffMs=250] first reconnect delay
   * @param {number} [opts.maxBackoffMs=15000] longest reconnect delay
   * @param {number} [opts.wsFailuresBeforePoll=3] failed WebSocket attempts, while the server answers HTTP, before falling back
   * @param {number} [opts.wsRetryMs=60000] while long-polling, try WebSocket again this often
   * @param {number} [opts.pollWaitMs=25000] long-poll wait per request
   * @param {object} [opts.positions] starting positions, e.g. saved from a previous page
   * @param {number} [opts.epoch] the epoch those positions belong to (saved with them from `client.epoch`)
   */
  constructor(opts) {
    if (!opts || !opts.url) throw new Error("PushClient: url is required");
    this.opts = Object.assign(
      {
        transport: "auto",
        autoAck: true,
        broadcast: true,
        minBackoffMs: 250,
        maxBackoffMs: 15000,
        wsFailuresBeforePoll: 3,
        wsRetryMs: 60000,
        pollWaitMs: 25000,
      },
      opts,
    );
    const base = (u) => u.replace(/\/+$/, "");
    const wsOf = (u) => u.replace(/^http/, "ws") + "/ws";
    /** Nodes to try in turn: the first is `url` (with `wsUrl`), then `fallbackUrls`. */
    this._nodes = [{ url: base(opts.url), wsUrl: opts.wsUrl || wsOf(base(opts.url)) }].concat(
      (opts.fallbackUrls || []).map((u) => ({ url: base(u), wsUrl: wsOf(base(u)) })),
    );
    this._node = 0;
    this.url = this._nodes[0].url;
    this.wsUrl = this._nodes[0].wsUrl;
    /** Last processed position per stream ("user", "broadcast", "room:<name>"). */
    this.positions = Object.assign({}, opts.positions || {});
    /** The epoch `positions` belong to (protocol version 2; 0 = unknown). Save it with them. */
    this.epoch = opts.epoch || 0;
    /** Rooms to be in (re-joined after every reconnect). */
    this.rooms = new Set();
    this.state = "idle";
    this.transport = null;
    this.onmessage = null;
    /** Version 2: the publisher withdrew a message ({id, stream, position}); take it back. */
    this.onrecall = null;
    this.onstate = null;
    this.onerror = null;
    this._seen = new Set();
    this._seenOrder = [];
    this._attempt = 0;
    this._wsFailures = 0;
    this._ws = null;
    this._timer = null;
    this._stopped = true;
    this._pollAbort = null;
    this._ackPending = false;
    this._seq = 0;
    /** Protocol version of the current session (2 and up: ping()). */
    this.version = 0;
    this._pings = new Map();
  }

  /** Starts connecting (and reconnecting until close()). */
  connect() {
    this._stopped = false;
    this._open();
  }

  /** Stops for good: closes the socket or the poll, cancels reconnects. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._ws) this._ws.close(1000, "client closed");
    if (this._pollAbort) this._pollAbort.abort();
    this._setState("closed");
  }

  /** Joins a room; replays what was missed since the last position seen in it. */
  join(room) {
    this.rooms.add(room);
    this._sendJoin(room);
  }

  /** Leaves a room. */
  leave(room) {
    this.rooms.delete(room);
    delete this.positions["room:" + room];
    if (this._wsOpen()) this._send({ op: "leave", room });
  }

  /**
   * Protocol version 2: resolves with the round trip of a ping in ms. The pong also means every
   * frame the server queued before it has arrived. Rejects when not connected over WebSocket,
   * when the server is older, or when the session ends first.
   */
  ping() {
    if (!this._wsOpen() || this.state !== "connected")
      return Promise.reject(new Error("ping: not connected over WebSocket"));
    if (this.version < 2)
      return Promise.reject(new Error("ping: the server speaks protocol version " + this.version));
    return new Promise((resolve, reject) => {
      const seq = this._send({ op: "ping" });
      this._pings.set(seq, { t0: performance.now(), resolve, reject });
    });
  }

  /** Acknowledges a message (needed only with autoAck: false); acks are cumulative. */
  ack(message) {
    this._advance(message.stream, message.position);
    this._flushAck();
  }

  // ---- internals ----

  _setState(s, detail) {
    if (this.state === s && !detail) return;
    this.state = s;
    if (this.onstate) this.onstate(s, detail);
  }

  async _token() {
    const t = this.opts.token;
    return typeof t === "function" ? await t() : t;
  }

  _useWs() {
    if (this.opts.transport === "poll" || typeof WebSocket === "undefined") return false;
    if (this.opts.transport === "ws") return true;
    return this._wsFailures < this.opts.wsFailuresBeforePoll;
  }

  async _open() {
    if (this._stopped) return;
    this._setState("connecting", { attempt: this._attempt });
    let token;
    try {
      token = await this._token();
    } catch (e) {
      return this._retry({ reason: "token: " + e });
    }
    if (this._useWs()) this._openWs(token);
    else this._poll(token);
  }

  _openWs(token) {
    this.transport = "ws";
    let opened = false;
    const ws = new WebSocket(this.wsUrl, SUBPROTOCOL);
    this._ws = ws;
    ws.onopen = () => {
      const resume = {};
      for (const [s, p] of Object.entries(this.positions)) {
        if (s === "user" || (s === "broadcast" && this.opts.broadcast)) resume[s] = p;
      }
      const hello = { op: "hello", token, resume };
      if (this.epoch) hello.epoch = this.epoch;
      this._send(hello);
    };
    ws.onmessage = (ev) => {
      opened = true; // a session answered: this transport works here
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return this._error("server sent invalid JSON: " + e);
      }
      this._onServer(msg);
    };
    ws.onclose = async (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      for (const p of this._pings.values()) p.reject(new Error("ping: the session ended"));
      this._pings.clear();
      const detail = { code: ev.code, reason: ev.reason };
      const refreshable = typeof this.opts.token === "function";
      if (FATAL_CLOSE.has(ev.code) || (ev.code === TOKEN_EXPIRED && !refreshable)) {
        this._stopped = true;
        return this._setState("closed", detail);
      }
      // A WebSocket that never carried a session counts against WebSocket only when the
      // server answers plain HTTP: a server that is down is not a reason to fall back.
      if (!opened && (await this._httpReachable())) this._wsFailures++;
      this._retry(detail, this._reconnectHint);
    };
    ws.onerror = () => {}; // onclose follows with the details the browser allows.
  }

  async _httpReachable() {
    try {
      return (await fetch(this.url + "/healthz", { cache: "no-store" })).ok;
    } catch {
      return false;
    }
  }

  _onServer(msg) {
    switch (msg.op) {
      case "welcome":
        this._attempt = 0;
        this._wsFailures = 0;
        this._reconnectHint = undefined;
        this.version = msg.version;
        if (msg.epoch && msg.epoch !== this.epoch) this._newEpoch(msg.epoch);
        this._setState("connected", { transport: "ws", user: msg.user, conn_id: msg.conn_id });
        for (const room of this.rooms) this._sendJoin(room);
        break;
      case "push":
        this._deliver(msg);
        break;
      case "recall":
        if (this.onrecall) this.onrecall(msg);
        break;
      case "ping":
        this._send({ op: "pong" });
        break;
      case "pong": {
        const p = this._pings.get(msg.seq);
        if (p) {
          this._pings.delete(msg.seq);
          p.resolve(performance.now() - p.t0);
        }
        break;
      }
      case "close":
        // The socket closes next; honour the server's reconnect hint.
        this._reconnectHint = msg.reconnect_ms === null ? undefined : msg.reconnect_ms;
        if (msg.reconnect_ms === null && msg.name === "KICKED") this._stopped = true;
        break;
      case "gap":
        // After a GAP the position is first_available - 1 (SPEC.md §5.11), even when that is
        // below ours: the stream was restored or recreated and its positions start again.
        this._error(
          (msg.first_available <= msg.requested_after ? "stream reset: " : "history lost: ") +
            JSON.stringify(msg),
        );
        this.positions[msg.stream] = msg.first_available - 1;
        break;
      case "auth_error":
      case "error":
        this._error(msg.name + ": " + msg.reason, msg);
        break;
      default:
        break; // ok, publish_ack: nothing to do here
    }
  }

  _deliver(msg) {
    const seen = this.positions[msg.stream] || 0;
    // Version 2: a transient message (position 0) is not stored; nothing to ack or resume.
    const transient = msg.transient === true;
    if (this._seen.has(msg.id) || (!transient && msg.stream !== "user" && msg.position <= seen)) {
      // Already delivered (a replay after reconnect): acknowledge again, do not repeat.
      if (msg.stream === "user") this._flushAck();
      return;
    }
    this._remember(msg.id);
    try {
      if (this.onmessage) this.onmessage(msg);
    } finally {
      if (!transient && (this.opts.autoAck || msg.stream !== "user"))
        this._advance(msg.stream, msg.position);
      if (!transient && this.opts.autoAck) this._flushAck();
    }
  }

  /** The server's streams started a new timeline (SPEC.md §5.2): the server answers the
   * positions sent in HELLO with GAPs; room positions, sent later with JOIN, start over here. */
  _newEpoch(epoch) {
    if (this.epoch) {
      for (const s of Object.keys(this.positions)) {
        if (s.startsWith("room:") && this.positions[s] > 0) {
          this._error("stream reset: new epoch " + JSON.stringify({ stream: s, requested_after: this.positions[s], first_available: 1 }));
          this.positions[s] = 0;
        }
      }
    }
    this.epoch = epoch;
  }

  _advance(stream, position) {
    if ((this.positions[stream] || 0) < position) this.positions[stream] = position;
  }

  _remember(id) {
    this._seen.add(id);
    this._seenOrder.push(id);
    if (this._seenOrder.length > 4096) this._seen.delete(this._seenOrder.shift());
  }

  _flushAck() {
    // One cumulative ack per burst of messages.
    if (this._ackPending || !this._wsOpen()) return;
    this._ackPending = true;
    queueMicrotask(() => {
      this._ackPending = false;
      if (this._wsOpen() && this.positions.user)
        this._send({ op: "ack", stream: "user", position: this.positions.user });
    });
  }

  _sendJoin(room) {
    if (!this._wsOpen() || this.state !== "connected") return;
    const after = this.positions["room:" + room];
    this._send(after === undefined ? { op: "join", room } : { op: "join", room, after });
  }

  _wsOpen() {
    return this._ws && this._ws.readyState === 1;
  }

  _send(obj) {
    obj.seq = ++this._seq;
    this._ws.send(JSON.stringify(obj));
    return obj.seq;
  }

  _error(text, detail) {
    if (this.onerror) this.onerror(text, detail);
  }

  _retry(detail, hintMs) {
    if (this._stopped) return;
    this._attempt++;
    if (this._nodes.length > 1) {
      // The node failed or asked us to come back later: another node serves the same streams.
      this._node = (this._node + 1) % this._nodes.length;
      ({ url: this.url, wsUrl: this.wsUrl } = this._nodes[this._node]);
      detail = Object.assign({ next: this.url }, detail);
    }
    const base = Math.min(this.opts.maxBackoffMs, this.opts.minBackoffMs * 2 ** (this._attempt - 1));
    const delay = hintMs !== undefined ? hintMs : base / 2 + Math.random() * (base / 2);
    this._setState("reconnecting", Object.assign({ in_ms: Math.round(delay) }, detail));
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  async _poll(token) {
    this.transport = "poll";
    const wsRetryAt = Date.now() + this.opts.wsRetryMs;
    // The first poll returns at once, so the state is known and the backlog arrives.
    let wait = 0;
    while (!this._stopped) {
      const q = new URLSearchParams({
        after: String(this.positions.user || 0),
        wait_ms: String(wait),
      });
      wait = this.opts.pollWaitMs;
      if (this.opts.broadcast) q.set("broadcast_after", String(this.positions.broadcast || 0));
      const rooms = [...this.rooms].map((r) => r + ":" + (this.positions["room:" + r] || 0));
      if (rooms.length) q.set("rooms", rooms.join(","));
      if (this.epoch) q.set("epoch", String(this.epoch));
      const abort = new AbortController();
      this._pollAbort = abort;
      let res, body;
      try {
        res = await fetch(this.url + "/api/v1/poll?" + q, {
          headers: { Authorization: "Bearer " + token },
          signal: abort.signal,
          cache: "no-store",
        });
        body = await res.json();
      } catch (e) {
        if (this._stopped) return;
        return this._retry({ reason: "poll failed: " + e });
      } finally {
        this._pollAbort = null;
      }
      if (!res.ok) {
        const detail = { status: res.status, reason: body && body.error };
        if (FATAL_HTTP.has(res.status)) {
          this._stopped = true;
          return this._setState("closed", detail);
        }
        return this._retry(detail);
      }
      this._attempt = 0;
      this._setState("connected", { transport: "poll", user: body.user });
      // Every position of the poll was in its query, so the server's GAPs cover an epoch change.
      if (body.epoch) this.epoch = body.epoch;
      for (const g of body.gaps) this._onServer(Object.assign({ op: "gap" }, g));
      for (const m of body.messages) this._deliver(m);
      // The next poll's `after` acknowledges what was processed.
      if (this.opts.transport === "auto" && Date.now() >= wsRetryAt) {
        // Give WebSocket one more chance; a single failure brings us back here.
        this._wsFailures = this.opts.wsFailuresBeforePoll - 1;
        return this._open();
      }
    }
  }
}
