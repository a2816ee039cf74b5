// The admin console (/admin) in headless Chromium against the real binary: a wrong key is
// refused, the admin key logs in, the charts and the nodes table move while pushes run, a
// connected user (the /demo page in a second tab) is looked up, a test message pushed to a
// room from the console arrives in that tab, and the user is disconnected. Screenshots under
// target/e2e/console-*.png.
//
// Run: node client/js/test/console.test.mjs target/debug/push-server
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { chromium } from "playwright-core";
import { openDemo, Server } from "./server.mjs";

const binary = resolve(process.argv[2] || "target/debug/push-server");
const artifacts = resolve("target/e2e");
mkdirSync(artifacts, { recursive: true });
const TIMEOUT = 20000;

async function newPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => m.type() === "error" && console.error("page:", m.text()));
  page.on("pageerror", (e) => console.error("page error:", e));
  return page;
}

async function main() {
  const server = await (await Server.create(binary)).start();
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-sync"],
  });
  let load = null;
  try {
    assert.equal((await fetch(server.base + "/admin/nothing.js")).status, 404);

    // A connected user: the demo page, joined to the lobby.
    const demo = await newPage(browser);
    await openDemo(demo, server.base, "watched", null, TIMEOUT);
    await demo.click("#join");
    await demo.waitForFunction(() => document.querySelector("#log").textContent.includes("joined lobby"), null, { timeout: TIMEOUT });

    // 1. Log in: a wrong key is refused with the server's reason, the admin key is taken.
    const page = await newPage(browser);
    await page.goto(server.base + "/admin");
    await page.fill("#key", "not-a-key");
    await page.click("#login-form button");
    await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("HTTP 401"), null, { timeout: TIMEOUT });
    await page.screenshot({ path: `${artifacts}/console-login.png` });
    await page.fill("#key", server.apiToken);
    await page.click("#login-form button");
    await page.waitForSelector("#console:not([hidden])", { timeout: TIMEOUT });
    assert.equal(await page.evaluate(() => sessionStorage.getItem("push-console-key")), server.apiToken);
    console.log("login: ok");

    // 2. While pushes run, the charts and the nodes table show deliveries.
    let pushed = 0;
    load = setInterval(() => {
      pushed += 1;
      server.push({ to: { users: ["watched"] }, kind: "load", payload: "load " + pushed }).catch(() => {});
    }, 50);
    await page.waitForFunction(() => series.d_user.some((v) => v > 0) && series.tcp.length + series.websocket.length >= 6, null, { timeout: TIMEOUT });
    const connections = await page.evaluate(() => series.websocket[series.websocket.length - 1]);
    assert.equal(connections, 1, "the demo tab's WebSocket connection is charted");
    await page.waitForFunction(() => {
      const cells = [...document.querySelectorAll("#nodes tbody tr.total td")].map((td) => td.textContent);
      return cells.length > 3 && Number(cells[3].replace(/,/g, "")) > 0;
    }, null, { timeout: TIMEOUT });
    await page.screenshot({ path: `${artifacts}/console-live.png`, fullPage: true });
    clearInterval(load);
    load = null;
    console.log(`live charts: ok (${pushed} pushes during the run)`);

    // 3. Look the connected user up.
    await page.fill("#user-id", "watched");
    await page.click("#user-form button");
    await page.waitForFunction(() => document.querySelector("#user-result").textContent.includes("online: 1 connection(s)"), null, { timeout: TIMEOUT });
    assert.match(await page.textContent("#user-result"), /acknowledged up to #\d+ of #\d+/);
    assert.match(await page.textContent("#sessions"), /websocket \(v2\)/);
    console.log("user lookup: ok");

    // 4. Push a test message to the room from the console: the console shows it stored and
    // queued to the one member, and it arrives in the demo tab.
    await page.selectOption("#push-target", "room");
    await page.fill("#push-to", "lobby");
    await page.fill("#push-text", "hello from the console");
    await page.click("#push-form button");
    await page.waitForFunction(() => /room:lobby #1: queued to 1 connection/.test(document.querySelector("#push-result").textContent), null, { timeout: TIMEOUT });
    await page.waitForFunction(() => document.querySelector("#room-result").textContent.includes("hello from the console"), null, { timeout: TIMEOUT });
    assert.match(await page.textContent("#room-result"), /1 member\(s\) · tail #1/);
    await demo.locator("#messages li", { hasText: "Console test" }).first().waitFor({ timeout: TIMEOUT });
    console.log("room push: ok");

    // 5. Disconnect the user.
    await page.click("#user-form button");
    await page.waitForSelector("#kick", { timeout: TIMEOUT });
    await page.click("#kick");
    await page.waitForFunction(() => (document.querySelector("#kicked") || {}).textContent === "closed 1 connection(s)", null, { timeout: TIMEOUT });
    await demo.waitForFunction(() => /kicked|KICKED|closed/i.test(document.querySelector("#log").textContent), null, { timeout: TIMEOUT });
    await page.screenshot({ path: `${artifacts}/console-user.png`, fullPage: true });
    console.log("disconnect: ok");
  } finally {
    if (load) clearInterval(load);
    await browser.close();
    await server.stop();
  }
}

main().then(
  () => console.log("console e2e: ok; screenshots in " + artifacts),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
