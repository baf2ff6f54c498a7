// The demo room (/demo/ of `chorus serve --dev`) in Debian's Chromium,
// driven by playwright-core: two pages as two users in one room.
// scripts/install-browser installs the browser; $CHROMIUM overrides it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { freePort, startServer } from "../support/server.mjs";

const shots = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test-results");
let server;
let port;
let browser;
let context;
const pages = {};

before(async () => {
  // A fixed port: the pages' origin must survive the server's restart.
  port = await freePort();
  server = await startServer({ port });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  // One context: its pages share the BroadcastChannel the demo uses as
  // its stand-in for the voice provider's signaling.
  context = await browser.newContext({ viewport: { width: 980, height: 860 } });
  mkdirSync(shots, { recursive: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function login(name, userId, { car = false } = {}) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error: ${e.message}`));
  await page.goto(`http://127.0.0.1:${port}/demo/`);
  await page.fill("#user-id", String(userId));
  await page.fill("#nickname", name);
  if (car) await page.check("#car");
  await page.click("#enter");
  await page.waitForSelector("#room:not([hidden])");
  await page.waitForSelector('#status[data-state="connected"]');
  pages[name] = page;
  return page;
}

const text = (page, selector) => page.locator(selector).allInnerTexts().then((t) => t.join("\n"));

test("two users: car on entry, seat, chat, gift and notice seen on both pages", async () => {
  const ann = await login("Ann", 1);
  const bob = await login("Bob", 2, { car: true });
  // Ann is the only other member, so the server chose her to relay Bob's
  // enter_room; she shows his car.
  await ann.waitForSelector('#events li[data-action="enter_room"]:has-text("Bob")');
  await ann.waitForSelector('#events li[data-action="car"]');

  await bob.click('.seat[data-seat-id="2"]');
  for (const page of [ann, bob]) {
    await page.waitForSelector('.seat[data-seat-id="2"][data-user-id="2"]');
  }

  await ann.fill("#chat-input", "hello from Ann");
  await ann.click("#chat-send");
  for (const page of [ann, bob]) {
    await page.waitForSelector('#chat-log li:has-text("hello from Ann")');
  }

  await bob.selectOption("#gift-to", "1");
  await bob.click("#gift-send");
  for (const page of [ann, bob]) {
    await page.waitForSelector('#chat-log li.gift:has-text("sent 1 rose")');
  }

  await ann.fill("#notice-input", "Karaoke at nine");
  await ann.click("#notice-send");
  for (const page of [ann, bob]) {
    await page.waitForSelector('#notice:not([hidden]):has-text("Karaoke at nine")');
  }
  await ann.screenshot({ path: path.join(shots, "demo-ann.png") });
  await bob.screenshot({ path: path.join(shots, "demo-bob.png") });
  assert.match(await text(bob, "#chat-log li"), /Ann: hello from Ann/);
});

test("closing Bob's page shows his exit_room on Ann's within 2 s", async () => {
  const ann = pages.Ann;
  const started = Date.now();
  await pages.Bob.close();
  await ann.waitForSelector('#events li[data-action="exit_room"]:has-text("Bob")', { timeout: 5000 });
  const elapsed = Date.now() - started;
  console.log(`exit_room shown ${elapsed} ms after the page closed`);
  assert.ok(elapsed < 2000, `exit_room after ${elapsed} ms`);
  await ann.waitForSelector('.seat[data-seat-id="2"]:not([data-user-id])');
});

test("killing the server and starting it again: the page reconnects by itself", async () => {
  const ann = pages.Ann;
  await server.stop("SIGKILL");
  await ann.waitForSelector('#status:not([data-state="connected"])', { timeout: 10_000 });
  server = await startServer({ port });
  const started = Date.now();
  await ann.waitForSelector('#status[data-state="connected"]', { timeout: 40_000 });
  console.log(`reconnected ${Date.now() - started} ms after the server was back`);
  // The new server's memory store has no rooms: seed 2.2 says so.
  await ann.waitForSelector("#banner:not([hidden])", { timeout: 10_000 });
  await ann.screenshot({ path: path.join(shots, "demo-reconnected.png") });
  await ann.click("#reenter");
  await ann.waitForSelector("#banner[hidden]", { state: "attached" });
  const entered = ann.locator('#events li[data-action="enter_room"]', { hasText: "you entered" });
  await entered.nth(1).waitFor();
});
