// The plugin author's path, timed (issue 14, "done when"); run by
// scripts/plugin-path, which builds what it needs first.
//
//   chorus plugin new  →  edit the notification text  →  cargo test
//   →  chorus plugin dev (into a server started with serve --dev)
//   →  a real WebSocket client gets the new notification
//   →  edit again and save  →  the same connection gets the newer text
//
// A first, untimed-in-the-total round ("cold") builds the dependencies of
// a generated crate once, for the host target (unit tests) and for
// wasm32-wasip2, so the timed path measures what an author repeats.
// Prints one JSON line: {"cold_s":…, "path_s":…, "steps":{…}}.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const support = path.join(repo, "clients/js/test/support");
const { binary, startServer, withTimeout } = await import(path.join(support, "server.mjs"));
const { connectUser } = await import(path.join(support, "users.mjs"));

const chorus = binary();
const work = mkdtempSync(path.join(os.tmpdir(), "chorus-plugin-path-"));
const steps = {};

/** Runs a command to completion; rejects with its output on failure. */
function run(cmd, args, options = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("exit", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}:\n${out}`)),
    );
  });
}

/** Times `f` as step `name`. */
async function step(name, f) {
  const start = performance.now();
  const value = await f();
  steps[name] = Number(((performance.now() - start) / 1000).toFixed(2));
  return value;
}

/** Replaces the example's notification text in the crate's src/lib.rs. */
function setGreeting(dir, text) {
  const file = path.join(dir, "src/lib.rs");
  const source = readFileSync(file, "utf8");
  const edited = source.replace(/pub const GREETING: &str = "[^"]*";/, `pub const GREETING: &str = ${JSON.stringify(text)};`);
  if (edited === source) throw new Error("the example has no GREETING to edit");
  writeFileSync(file, edited);
}

/** The next notification of `action` the client receives (a plugin's own
 * notification comes as the SDK's `notification` event). */
function nextFrame(client, action) {
  return withTimeout(
    new Promise((resolve) => {
      const seen = (frame) => {
        if (frame.action !== action) return;
        client.off("notification", seen);
        resolve(frame);
      };
      client.on("notification", seen);
    }),
    10_000,
    `the ${action} notification`,
  );
}

const nice = (args) => ["-n", "10", ...args];

// The guide's five-minute block (docs/plugins.md, its first `sh` block) is
// the path this script runs, step for step, with its own folder, names and
// ports: if one changes, the other must. Fails before anything is timed.
const GUIDE_PATH = [
  "cargo build -p chorus",
  "chorus plugin new greeter --path ~/code",
  "cd ~/code/greeter && cargo test",
  "mkdir -p /tmp/plugins",
  "CHORUS_PLUGINS__DIR=/tmp/plugins chorus serve --dev &",
  "chorus plugin dev . --server http://127.0.0.1:9090",
];
{
  const guide = readFileSync(path.join(repo, "docs/plugins.md"), "utf8");
  const block = guide.match(/```sh\n([\s\S]*?)```/);
  if (!block) throw new Error("docs/plugins.md has no sh block: the five-minute path is gone");
  const commands = block[1]
    .split("\n")
    .map((line) => line.replace(/\s+#.*$/, "").trim())
    .filter(Boolean);
  if (JSON.stringify(commands) !== JSON.stringify(GUIDE_PATH)) {
    throw new Error(
      `docs/plugins.md's five-minute path is not the one scripts/plugin-path.mjs runs:\n` +
        `guide:  ${JSON.stringify(commands)}\nscript: ${JSON.stringify(GUIDE_PATH)}`,
    );
  }
}

let server;
let dev;
let client;
try {
  // Cold: the dependencies of a generated crate, once per machine.
  const coldStart = performance.now();
  await run(chorus, ["plugin", "new", "path_warmup", "--path", work]);
  const warm = path.join(work, "path_warmup");
  await run("nice", nice(["cargo", "test", "--quiet"]), { cwd: warm });
  await run("nice", nice(["cargo", "build", "--release", "--target", "wasm32-wasip2", "--quiet"]), { cwd: warm });
  const coldS = (performance.now() - coldStart) / 1000;

  const pathStart = performance.now();
  const name = "path_hello";
  const dir = path.join(work, name);
  await step("new", () => run(chorus, ["plugin", "new", name, "--path", work]));
  setGreeting(dir, "Hi from the five-minute path");
  await step("unit_test", () => run("nice", nice(["cargo", "test", "--quiet"]), { cwd: dir }));
  const plugins = path.join(work, "plugins");
  mkdirSync(plugins);
  server = await step("serve", () => startServer({ env: { CHORUS_PLUGINS__DIR: plugins } }));
  // Uploaded through the admin URL: the server writes it into its
  // plugins.dir and answers with the version that went live.
  // As the guide says it, from the crate's folder; the token is the
  // `serve --dev` default, so none is passed.
  dev = spawn(chorus, ["plugin", "dev", ".", "--server", server.adminUrl], {
    cwd: dir,
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "CHORUS_ADMIN__TOKEN")),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let devOut = "";
  dev.stderr.on("data", (d) => (devOut += d));
  const lives = [];
  const waiters = [];
  dev.stdout.on("data", (d) => {
    for (const line of String(d).split("\n").filter(Boolean)) {
      lives.push(line);
      waiters.shift()?.(line);
    }
  });
  const nextLive = () =>
    withTimeout(
      new Promise((resolve) => (lives.length > seen ? resolve(lives[seen]) : waiters.push(resolve))).then((l) => {
        seen += 1;
        return l;
      }),
      120_000,
      `plugin dev to report (${devOut})`,
    );
  let seen = 0;
  const live = await step("dev_live", nextLive);
  if (live !== `live: ${name} 0.1.0`) throw new Error(`plugin dev said ${live}\n${devOut}`);
  client = await connectUser(server, 4242);
  const first = await step("notified", async () => {
    const heard = nextFrame(client, name);
    await client.send(name, {});
    return heard;
  });
  if (first.text !== "Hi from the five-minute path") throw new Error(`got ${JSON.stringify(first)}`);
  // Save again: plugin dev rebuilds and swaps it in; the same connection
  // gets the new text.
  const again = await step("edit_to_notified", async () => {
    setGreeting(dir, "Hi again, same connection");
    const line = await nextLive();
    if (line !== `live: ${name} 0.1.0`) throw new Error(`plugin dev said ${line}\n${devOut}`);
    const heard = nextFrame(client, name);
    await client.send(name, {});
    return heard;
  });
  if (again.text !== "Hi again, same connection") throw new Error(`got ${JSON.stringify(again)}`);
  const pathS = (performance.now() - pathStart) / 1000;
  console.log(JSON.stringify({ cold_s: Number(coldS.toFixed(1)), path_s: Number(pathS.toFixed(1)), steps }));
} finally {
  client?.close();
  dev?.kill("SIGTERM");
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
}
