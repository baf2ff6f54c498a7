// Reconnection against the real server: a restart (1001), a dropped
// network (1006) with and without heartbeat.grace, the seed 2.2 rule
// after each, and a frozen server (dead link found by the missing pong).
import { test } from "node:test";
import assert from "node:assert/strict";
import { next, startProxy, startServer, until } from "../support/server.mjs";
import { collect, connectUser, enterRoom } from "../support/users.mjs";

test("server restart: 1001, reconnect by itself, removedFromRoom (the room died with it)", async () => {
  let server = await startServer();
  const port = server.port;
  const client = await connectUser(server, 201, { reconnect: { initialMs: 200, maxMs: 500 } });
  try {
    await enterRoom(server, 201, "restart_room");
    await client.refreshRoom();
    assert.equal(client.room?.channelName, "restart_room");
    const closed = next(client, "disconnected");
    await server.stop("SIGTERM");
    const info = await closed;
    assert.equal(info.code, 1001);
    assert.equal(info.willReconnect, true);
    const removed = next(client, "removedFromRoom", 20_000);
    const reconnected = next(client, "connected", 20_000);
    server = await startServer({ port });
    const again = await reconnected;
    assert.equal(again.reconnected, true);
    assert.equal((await removed).previous.channelName, "restart_room");
    assert.equal(client.room, null);
  } finally {
    client.close();
    await server.stop();
  }
});

/** A server behind a proxy whose cut() drops the client's connection. */
async function behindProxy(env) {
  const probe = await startServer({ env });
  const proxy = await startProxy(probe.port);
  await probe.stop();
  // Restart on the same port with end_point naming the proxy.
  const server = await startServer({
    port: probe.port,
    env: { ...env, CHORUS_SERVER__PUBLIC_URL: `ws://127.0.0.1:${proxy.port}` },
  });
  return { server, proxy, baseUrl: `http://127.0.0.1:${proxy.port}` };
}

test("dropped network without grace: the server removed the user; 2.2 raises removedFromRoom", async () => {
  const { server, proxy, baseUrl } = await behindProxy({});
  const client = await connectUser({ ...server, baseUrl }, 211, { reconnect: { initialMs: 1500, maxMs: 2000 } });
  try {
    await enterRoom(server, 211, "drop_room");
    await client.refreshRoom();
    const closed = next(client, "disconnected");
    const removed = next(client, "removedFromRoom", 20_000);
    proxy.cut();
    assert.equal((await closed).willReconnect, true);
    assert.equal((await removed).previous.channelName, "drop_room");
    assert.equal(client.state, "connected");
  } finally {
    client.close();
    await proxy.close();
    await server.stop();
  }
});

test("dropped network within heartbeat.grace: connected resumes the room; no removedFromRoom", async () => {
  const { server, proxy, baseUrl } = await behindProxy({ CHORUS_HEARTBEAT__GRACE: "30s" });
  const client = await connectUser({ ...server, baseUrl }, 221, { reconnect: { initialMs: 300, maxMs: 600 } });
  try {
    await enterRoom(server, 221, "grace_room");
    await client.refreshRoom();
    const removed = collect(client, "removedFromRoom");
    const reconnected = next(client, "connected", 20_000);
    proxy.cut();
    const info = await reconnected;
    assert.equal(info.reconnected, true);
    assert.equal(info.channelName, "grace_room");
    await until(async () => (await client.refreshRoom()).room?.channelName === "grace_room", "the room");
    assert.equal(removed.length, 0);
  } finally {
    client.close();
    await proxy.close();
    await server.stop();
  }
});

test("dropped network within heartbeat.grace: what was missed is replayed in order, then resumed", async () => {
  const { server, proxy, baseUrl } = await behindProxy({
    CHORUS_HEARTBEAT__GRACE: "30s",
    CHORUS_DELIVERY__MODE: "broadcast",
  });
  const client = await connectUser({ ...server, baseUrl }, 241, { reconnect: { initialMs: 1500, maxMs: 2000 } });
  const gift = (num) => ({
    id: 5, sender_id: 242, receiver_id: 241, sender_nickname: "s", receiver_nickname: "r", name: "rose",
    dynamic_image_url: "d", image_url: "i", image_big_url: "b", image_small_url: "m", num,
    sender_room_seat_id: 0, receiver_room_seat_id: 0,
  });
  try {
    const state = next(client, "roomState");
    await enterRoom(server, 241, "resume_room");
    await enterRoom(server, 242, "resume_room");
    assert.equal((await state).channel_name, "resume_room");
    await until(async () => client.positions.room?.seq >= 2, "the room's seq");
    const before = client.positions.room.seq;
    const gifts = collect(client, "send_gift");
    const closed = next(client, "disconnected");
    const resumed = next(client, "resumed", 20_000);
    proxy.cut();
    await closed;
    for (let num = 1; num <= 3; num++) {
      await server.api.action("send_gift", { channel_name: "resume_room", notify_type: "bc", gift: gift(num) });
    }
    const answer = await resumed;
    assert.equal(answer.recovered, true);
    assert.deepEqual(gifts.map((g) => g.gift.num), [1, 2, 3]);
    assert.deepEqual(gifts.map((g) => g.seq), [before + 1, before + 2, before + 3]);
    assert.equal(client.positions.room.seq, before + 3);
  } finally {
    client.close();
    await proxy.close();
    await server.stop();
  }
});

test("a frozen server: no pong, the client drops the link (4000) and comes back after", async () => {
  const server = await startServer({
    env: { CHORUS_HEARTBEAT__PING_INTERVAL: "1s", CHORUS_HEARTBEAT__PING_TIMEOUT: "30s" },
  });
  const client = await connectUser(server, 231, {
    pongTimeoutMs: 1000,
    httpTimeoutMs: 1000,
    reconnect: { initialMs: 300, maxMs: 600 },
  });
  try {
    const closed = next(client, "disconnected", 10_000);
    server.child.kill("SIGSTOP");
    const info = await closed;
    assert.equal(info.code, 4000);
    assert.equal(info.willReconnect, true);
    const back = next(client, "connected", 20_000);
    server.child.kill("SIGCONT");
    assert.equal((await back).reconnected, true);
  } finally {
    server.child.kill("SIGCONT");
    client.close();
    await server.stop();
  }
});
