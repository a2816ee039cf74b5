// End-to-end in headless Chromium (Playwright driving Debian's /usr/bin/chromium): the /demo
// page connects through the browser SDK, receives a pushed message, survives a server kill and
// restart (receiving what was pushed while it was away), falls back to long-polling when
// WebSocket is unavailable, moves on to a fallback URL when the first node is down, pings the
// server (protocol version 2), is told of a recalled message, receives transient messages
// (version 2) over WebSocket and long-poll without moving its positions, goes on from the
// server's positions when its own are ahead (a stream-reset GAP) or belong to another epoch.
// Saves
// screenshots under target/e2e/.
//
// Run: node client/js/test/browser.test.mjs target/debug/push-server
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { chromium } from "playwright-core";
import { openDemo, Server } from "./server.mjs";

const binary = resolve(process.argv[2] || "target/debug/push-server");
const artifacts = resolve("target/e2e");
mkdirSync(artifacts, { recursive: true });
const TIMEOUT = 20000;
/** Pages whose log is printed if the test fails. */
const pages = [];

async function connectPage(browser, server, user, transport) {
  const page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && console.error("page:", m.text()));
  page.on("pageerror", (e) => console.error("page error:", e));
  pages.push(page);
  await openDemo(page, server.base, user, transport, TIMEOUT);
  return page;
}

async function seeMessage(page, title) {
  const li = page.locator("#messages li", { hasText: title });
  await li.first().waitFor({ timeout: TIMEOUT });
  return li.first();
}

async function main() {
  const server = await (await Server.create(binary)).start();
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"],
  });
  try {
    // 1. Connect over WebSocket and receive a message pushed through the HTTP API.
    const page = await connectPage(browser, server, "webuser");
    assert.equal(await page.textContent("#transport"), "ws");
    await server.push({ to: { users: ["webuser"] }, kind: "alarm", title: "Device 42 alarm", content: "Temperature 81 C", level: "critical" });
    const li = await seeMessage(page, "Device 42 alarm");
    assert.equal(await li.locator(".kind").textContent(), "alarm");
    assert.equal(await li.locator(".level").textContent(), "critical");
    assert.equal(await li.getAttribute("class"), "critical");
    // The page's own push form (to me, and to a joined room) goes through the API too.
    await page.fill("#push-title", "from the form");
    await page.click("#push-send");
    await seeMessage(page, "from the form");
    await page.click("#join");
    await page.waitForFunction(() => document.querySelector("#log").textContent.includes("joined lobby"));
    await new Promise((r) => setTimeout(r, 300)); // let the JOIN reach the server
    await page.selectOption("#push-target", "room");
    await page.fill("#push-title", "room hello");
    await page.click("#push-send");
    const roomMsg = await seeMessage(page, "room hello");
    assert.match(await roomMsg.locator(".where").textContent(), /^room:lobby #1$/);
    console.log("live delivery over WebSocket: ok");

    // 2. Kill the server; while the page waits to reconnect, restart it and push: the page
    // reconnects and receives the message from storage, once.
    await server.kill();
    await page.waitForSelector("#state.reconnecting", { timeout: TIMEOUT });
    // Let the backoff grow past 1 s so the push below lands while the page is still away.
    await page.waitForFunction(
      () => /reconnecting \{"in_ms":(1[0-9]{3}|[2-9][0-9]{3}|[0-9]{5})/.test(document.querySelector("#log").textContent),
      null,
      { timeout: TIMEOUT },
    );
    await server.start();
    const presence = await server.api("GET", "/api/v1/users/webuser/presence");
    assert.equal(presence.body.online, false, "the page must still be away when the message is pushed");
    await server.push({ to: { users: ["webuser"] }, kind: "notification", title: "while you were away", content: "stored, then replayed", level: "warning" });
    await page.waitForSelector("#state.connected", { timeout: TIMEOUT });
    await seeMessage(page, "while you were away");
    await page.screenshot({ path: resolve(artifacts, "demo.png"), fullPage: true });
    // Nothing was shown twice (the SDK dedupes replays by id).
    const ids = await page.$$eval("#messages li", (lis) => lis.map((l) => l.dataset.id));
    assert.equal(new Set(ids).size, ids.length, "no message rendered twice");
    assert.equal(ids.length, 4);
    console.log("reconnect after kill and replay of what was pushed meanwhile: ok");

    // 3. A browser where WebSocket is broken: the SDK falls back to long-polling.
    const context = await browser.newContext();
    await context.routeWebSocket(/\/ws/, (ws) => ws.close({ code: 1011, reason: "blocked by the test" }));
    const blocked = await context.newPage();
    await blocked.goto(server.base + "/demo");
    await blocked.fill("#user", "polluser");
    await blocked.click("#mint");
    await blocked.waitForFunction(() => document.querySelector("#token").value.length > 20);
    await blocked.click("#connect");
    pages.push(blocked);
    await blocked.waitForFunction(() => document.querySelector("#transport").textContent === "poll", null, { timeout: TIMEOUT });
    await blocked.waitForSelector("#state.connected", { timeout: TIMEOUT });
    await server.push({ to: { users: ["polluser"] }, kind: "alarm", title: "over long-poll", content: "fallback", level: "error" });
    await seeMessage(blocked, "over long-poll");
    await blocked.screenshot({ path: resolve(artifacts, "demo-long-poll.png"), fullPage: true });
    // The next poll acknowledged it.
    let acked = 0;
    for (let i = 0; i < 100 && acked < 1; i++) {
      acked = (await server.api("GET", "/api/v1/history/users/polluser")).body.acked;
      if (acked < 1) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(acked, 1, "the long-poll client acknowledged by position");
    // A transient message (version 2, not stored) reaches a waiting poll too.
    // At most once: pushed while a poll of the page is waiting (the user is online).
    for (let i = 0; i < 100; i++) {
      if ((await server.api("GET", "/api/v1/users/polluser/presence")).body.online) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await server.push({ to: { users: ["polluser"] }, kind: "typing", title: "typing over long-poll", content: "...", transient: true });
    await seeMessage(blocked, "typing over long-poll");
    console.log("long-poll fallback: ok");

    // 4. Fallback URLs (cluster nodes): the first node given is down, so the SDK moves on to
    // the next one and receives there.
    const fb = await browser.newPage();
    pages.push(fb);
    await fb.goto(server.base + "/demo");
    await fb.fill("#user", "fbuser");
    await fb.click("#mint");
    await fb.waitForFunction(() => document.querySelector("#token").value.length > 20);
    const dead = "http://127.0.0.1:" + (await server.deadPort());
    await fb.evaluate(
      async ({ dead, live }) => {
        const { PushClient } = await import("/sdk/push.js");
        const token = document.querySelector("#token").value;
        const c = new PushClient({ url: dead, fallbackUrls: [live], token, minBackoffMs: 50 });
        window.fbClient = c;
        window.fbGot = [];
        window.fbStates = [];
        c.onstate = (s, d) => window.fbStates.push([s, d && d.next]);
        c.onmessage = (m) => window.fbGot.push(m.data && m.data.title);
        c.connect();
      },
      { dead, live: server.base },
    );
    await fb.waitForFunction(() => window.fbStates.some(([s]) => s === "connected"), null, { timeout: TIMEOUT });
    await server.push({ to: { users: ["fbuser"] }, kind: "k", title: "via the fallback", content: "x", level: "info" });
    await fb.waitForFunction(() => window.fbGot.includes("via the fallback"), null, { timeout: TIMEOUT });
    const states = await fb.evaluate(() => window.fbStates);
    const moved = states.find(([s]) => s === "reconnecting");
    assert.deepEqual(moved, ["reconnecting", server.base], JSON.stringify(states));
    console.log("fallback to the next node: ok");
    // Protocol version 2: the SDK pings the server and gets the round trip.
    const ping = await fb.evaluate(async () => [window.fbClient.version, await window.fbClient.ping()]);
    assert.equal(ping[0], 2);
    assert.ok(typeof ping[1] === "number" && ping[1] >= 0, JSON.stringify(ping));
    console.log("client ping: ok, " + ping[1].toFixed(2) + " ms");
    // A transient message: delivered, but neither acknowledged nor a position to resume from.
    const before = await fb.evaluate(() => window.fbClient.positions.user);
    await server.push({ to: { users: ["fbuser"] }, kind: "typing", title: "transient hello", content: "...", transient: true });
    await fb.waitForFunction(() => window.fbGot.includes("transient hello"), null, { timeout: TIMEOUT });
    assert.equal(await fb.evaluate(() => window.fbClient.positions.user), before);
    console.log("transient message: ok");
    // Recall (version 2): the publisher withdraws a message the page has; the SDK says so.
    await fb.evaluate(() => {
      window.fbRecalls = [];
      window.fbClient.onrecall = (r) => window.fbRecalls.push(r);
    });
    const sent = await server.push({ to: { users: ["fbuser"] }, kind: "k", title: "to be recalled", content: "x", level: "info" });
    await fb.waitForFunction(() => window.fbGot.includes("to be recalled"), null, { timeout: TIMEOUT });
    const { stream, position, id } = sent.accepted[0];
    const recalled = await server.api("POST", "/api/v1/recall", { stream, position });
    assert.equal(recalled.status, 200, JSON.stringify(recalled));
    await fb.waitForFunction((id) => window.fbRecalls.some((r) => r.id === id), id, { timeout: TIMEOUT });
    const r = await fb.evaluate(() => window.fbRecalls[0]);
    assert.deepEqual([r.stream, r.position], ["user", position]);
    console.log("recall: ok");
    // A client whose saved position is ahead of the server's stream (restored or recreated
    // server) is told so by a GAP and goes on from the server's positions.
    await fb.evaluate(async () => {
      const { PushClient } = await import("/sdk/push.js");
      const token = document.querySelector("#token").value;
      const c = new PushClient({ url: location.origin, token, positions: { user: 999 } });
      window.resetErrors = [];
      window.resetGot = [];
      c.onerror = (text) => window.resetErrors.push(text);
      c.onmessage = (m) => window.resetGot.push([m.position, m.data && m.data.title]);
      window.resetClient = c;
      c.connect();
    });
    await fb.waitForFunction(() => window.resetErrors.some((t) => t.startsWith("stream reset")), null, { timeout: TIMEOUT });
    // first_available - 1: the last position the server knows this user acknowledged (0 to
    // 2: two stored messages were pushed to this user above).
    const after = await fb.evaluate(() => window.resetClient.positions.user);
    assert.ok(after <= 2, "position after the reset GAP: " + after);
    await server.push({ to: { users: ["fbuser"] }, kind: "k", title: "after the reset", content: "x", level: "info" });
    await fb.waitForFunction(() => window.resetGot.some(([, t]) => t === "after the reset"), null, { timeout: TIMEOUT });
    console.log("stream reset GAP: ok");
    // Positions saved under another epoch (SPEC.md §5.2): the server answers with a GAP
    // instead of taking them as acknowledgements, and the client takes the server's epoch.
    const epoch = await fb.evaluate(async () => {
      const { PushClient } = await import("/sdk/push.js");
      const token = document.querySelector("#token").value;
      const server = window.resetClient.epoch;
      const c = new PushClient({ url: location.origin, token, positions: { user: 1 }, epoch: server + 1 });
      window.epochErrors = [];
      c.onerror = (text) => window.epochErrors.push(text);
      window.epochClient = c;
      c.connect();
      return server;
    });
    assert.ok(epoch > 0, "the session told the epoch: " + epoch);
    await fb.waitForFunction(() => window.epochErrors.some((t) => t.startsWith("stream reset")), null, { timeout: TIMEOUT });
    assert.equal(await fb.evaluate(() => window.epochClient.epoch), epoch);
    console.log("epoch change: ok");
  } catch (e) {
    for (const p of pages) console.error("page log:\n" + (await p.textContent("#log").catch(() => "?")));
    throw e;
  } finally {
    await browser.close();
    await server.stop();
  }
}

main().then(
  () => console.log("browser e2e: ok; screenshots in " + artifacts),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
