// Starts the real server binary (`chorus serve --dev`) for the tests, on a
// port the kernel picks, and finds the port in its JSON log line
// `chorus listening` (the server binds before it logs).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ServerApi } from "../../dist/backend.js";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

/** The secret `--dev` uses (host/src/config.rs). */
export const DEV_SECRET = "chorus-dev-secret";

/** The server binary: $CHORUS_BIN, else target/debug/chorus. */
export function binary() {
  const bin =
    process.env.CHORUS_BIN ??
    path.join(process.env.CARGO_TARGET_DIR ?? path.join(repo, "target"), "debug", "chorus");
  if (!existsSync(bin)) {
    throw new Error(`no server binary at ${bin}: run \`cargo build -p chorus\` (or set CHORUS_BIN)`);
  }
  return bin;
}

/**
 * A running server. `port` 0 lets the kernel choose; pass the port of an
 * earlier run to restart "the same" server.
 */
export async function startServer({ port = 0, env = {} } = {}) {
  const child = spawn(binary(), ["--log-format", "json", "serve", "--dev"], {
    env: {
      ...process.env,
      RUST_LOG: "info",
      CHORUS_SERVER__LISTEN: `127.0.0.1:${port}`,
      CHORUS_ADMIN__LISTEN: "127.0.0.1:0",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const logs = [];
  const listening = new Promise((resolve, reject) => {
    let buffer = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        logs.push(line);
        try {
          const entry = JSON.parse(line);
          if (entry.message === "chorus listening") resolve(entry);
        } catch {
          // Not a log line of ours.
        }
      }
    });
    child.on("exit", (code) => reject(new Error(`chorus exited with ${code}:\n${logs.join("\n")}`)));
  });
  const entry = await withTimeout(listening, 30_000, "the server to listen");
  const addr = entry.addr;
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return {
    child,
    logs,
    port: Number(addr.split(":").pop()),
    baseUrl: `http://${addr}`,
    adminUrl: `http://${entry.admin_addr}`,
    api: new ServerApi(`http://${addr}`, DEV_SECRET),
    /** Stops the server with `signal` and waits for it to exit. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    /** A metric's value from /metrics (0 when absent). */
    async metric(name, labels = "") {
      const text = await (await fetch(`http://${entry.admin_addr}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ""} `));
      return line ? Number(line.split(" ").pop()) : 0;
    },
  };
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Resolves when `check()` is true; polls. */
export async function until(check, what, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The next `name` event of `client`. */
export function next(client, name, ms = 10_000) {
  return withTimeout(new Promise((resolve) => client.once(name, resolve)), ms, `the ${name} event`);
}

/** A free TCP port on 127.0.0.1 (for the browser tests, whose page origin
 * must stay the same across a server restart). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/**
 * A TCP proxy in front of the server, whose `cut()` drops every
 * connection at once, as a network failure would (the server sees the
 * connection reset, the client a 1006).
 */
export async function startProxy(targetPort) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    cut() {
      for (const s of sockets) s.resetAndDestroy?.() ?? s.destroy();
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
