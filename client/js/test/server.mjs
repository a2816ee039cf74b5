// Starts a real push-server binary on free loopback ports for the browser tests.
import { spawn } from "node:child_process";
import { mkdtempSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

async function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export class Server {
  /** A dev-mode server (built-in secret and API token, so /demo can mint tokens). */
  static async create(binary) {
    const s = new Server();
    s.binary = binary;
    s.dir = mkdtempSync(join(tmpdir(), "push-browser-"));
    s.tcp = await freePort();
    s.http = await freePort();
    s.base = `http://127.0.0.1:${s.http}`;
    s.apiToken = "dev-api-token";
    return s;
  }

  async start() {
    const log = openSync(join(this.dir, "server.log"), "a");
    // Dev mode: no secret or API tokens from the environment.
    const env = { ...process.env, RUST_LOG: "warn" };
    delete env.PUSH_JWT_SECRET;
    delete env.PUSH_API_TOKENS;
    this.proc = spawn(
      this.binary,
      ["--listen", `127.0.0.1:${this.tcp}`, "--http-listen", `127.0.0.1:${this.http}`, "--data-dir", join(this.dir, "d")],
      { stdio: ["ignore", log, log], env },
    );
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      try {
        if ((await fetch(this.base + "/healthz")).ok) return this;
      } catch {}
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("server did not start; log in " + this.dir);
  }

  /** A loopback port nothing listens on (a node that is down). */
  async deadPort() {
    return freePort();
  }

  async kill() {
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGKILL");
    await exited;
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      await exited;
    }
  }

  async api(method, path, body) {
    const r = await fetch(this.base + path, {
      method,
      headers: { Authorization: "Bearer " + this.apiToken, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: r.status, body: await r.json() };
  }

  async push(body) {
    const r = await this.api("POST", "/api/v1/push", body);
    if (r.status !== 200) throw new Error("push refused: " + JSON.stringify(r));
    return r.body;
  }
}

/** Opens /demo on `page`, mints a token for `user`, picks `transport` if given, connects and waits until connected. */
export async function openDemo(page, base, user, transport, timeout = 20000) {
  await page.goto(base + "/demo");
  await page.fill("#user", user);
  await page.click("#mint");
  await page.waitForFunction(() => document.querySelector("#token").value.length > 20, null, { timeout });
  if (transport) await page.selectOption("#transport-choice", transport);
  await page.click("#connect");
  await page.waitForSelector("#state.connected", { timeout });
}
