// The client's state machine against a scripted fake socket: the faults a
// real server cannot be made to produce on demand (a frame that is not
// JSON) and the exact reconnect verdicts. tests/server/ runs the same
// client against the real server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ChorusClient, ChorusError } from "../../dist/index.js";

const SID = "7.1893456000.n.0000000000000000000000000000000000000000000000000000000000000000";

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code) {
    this.readyState = 3;
    this.closedWith = code;
  }
  // The server's side.
  accept(extra = {}) {
    this.readyState = 1;
    this.onopen?.({});
    this.push({
      action: "connected", online_token: "tok", ping_interval: 15, ping_timeout: 20,
      server_time: Math.floor(Date.now() / 1000), user_id: 7, current_room_id: "", channel_name: "",
      ...extra,
    });
  }
  push(frame) {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }
  drop(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

const until = async (check, what, ms = 3000) => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

function setup(options = {}, discovery = () => ({ status: 200, body: { error_code: 0, end_point: "ws://fake" } })) {
  FakeSocket.all = [];
  const warnings = [];
  const calls = [];
  const fetch = async (url) => {
    calls.push(url);
    const { status, body, headers = {} } = discovery(url);
    return new Response(JSON.stringify(body), { status, headers });
  };
  const client = new ChorusClient({
    baseUrl: "http://fake", userId: 7, sid: SID, signKey: "k".repeat(64),
    WebSocket: FakeSocket, fetch,
    logger: { warn: (m) => warnings.push(m), debug() {} },
    reconnect: { initialMs: 20, maxMs: 40 },
    ...options,
  });
  return { client, warnings, calls };
}

const lastSocket = () => FakeSocket.all.at(-1);

test("a frame that is not JSON is ignored with a warning; the connection stays", async () => {
  const { client, warnings } = setup();
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  lastSocket().accept();
  await connecting;
  lastSocket().push("this is {not json");
  assert.equal(client.state, "connected");
  assert.ok(warnings.some((w) => w.includes("not JSON")), warnings.join("\n"));
  const acked = client.send("send_topic_msg", { channel_name: "r", content: "hi" });
  await until(() => lastSocket().sent.length === 1, "the action");
  const sent = lastSocket().sent[0];
  lastSocket().push({ action: "ack", ref_action: "send_topic_msg", msg_ids: ["m1"], result: { ok: 1 }, nonce: sent.nonce });
  assert.deepEqual(await acked, { refAction: "send_topic_msg", msgIds: ["m1"], result: { ok: 1 } });
  client.close();
});

for (const [code, reason] of [[4009, "replaced"], [4010, "kicked"]]) {
  test(`close ${code} does not reconnect and says why`, async () => {
    const { client } = setup();
    const events = [];
    client.on("disconnected", (e) => events.push(e));
    const connecting = client.connect();
    await until(() => FakeSocket.all.length === 1, "a socket");
    lastSocket().accept();
    await connecting;
    lastSocket().push({ action: "kicked", reason });
    lastSocket().drop(code, reason);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(FakeSocket.all.length, 1, "no second socket");
    assert.equal(client.state, "closed");
    assert.equal(events.length, 1);
    assert.equal(events[0].code, code);
    assert.equal(events[0].mayReconnect, false);
    assert.equal(events[0].willReconnect, false);
    assert.equal(events[0].kickedReason, reason);
  });
}

for (const code of [4000, 1001, 1006, 4011]) {
  test(`close ${code} reconnects with a freshly signed query`, async () => {
    const { client } = setup();
    const events = [];
    client.on("disconnected", (e) => events.push(e));
    const connecting = client.connect();
    await until(() => FakeSocket.all.length === 1, "a socket");
    lastSocket().accept();
    await connecting;
    lastSocket().drop(code);
    assert.equal(events[0].willReconnect, true);
    assert.equal(client.state, "reconnecting");
    await until(() => FakeSocket.all.length === 2, "a second socket");
    const [a, b] = FakeSocket.all.map((s) => new URL(s.url).searchParams);
    assert.notEqual(a.get("sign"), b.get("sign"));
    assert.notEqual(a.get("nonce"), b.get("nonce"));
    lastSocket().accept();
    await until(() => client.state === "connected", "connected again");
    client.close();
  });
}

test("401 from discovery: a clear error, no reconnect loop", async () => {
  const { client, calls } = setup({}, () => ({
    status: 401, body: { error_code: 1003, error_reason: "bad sid: bad MAC" },
  }));
  const errors = [];
  client.on("error", (e) => errors.push(e));
  await assert.rejects(client.connect(), (e) => e instanceof ChorusError && e.status === 401 && e.code === 1003);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(calls.length, 1);
  assert.equal(FakeSocket.all.length, 0);
  assert.equal(client.state, "closed");
  assert.equal(errors.length, 1);
});

test("a failed upgrade retries; the next discovery's 401 stops it", async () => {
  let refused = false;
  const { client, calls } = setup({}, () =>
    refused
      ? { status: 401, body: { error_code: 1003, error_reason: "sid revoked" } }
      : { status: 200, body: { error_code: 0, end_point: "ws://fake" } },
  );
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  refused = true;
  lastSocket().drop(1006); // what a browser shows for a refused upgrade
  await assert.rejects(connecting, (e) => e.status === 401);
  assert.equal(calls.length, 2);
  assert.equal(FakeSocket.all.length, 1);
});

test("an error frame rejects the action with code and reason; a silent server times out", async () => {
  const { client } = setup({ actionTimeoutMs: 100 });
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  lastSocket().accept();
  await connecting;
  const refused = client.send("send_gift", { channel_name: "r" });
  await until(() => lastSocket().sent.length === 1, "the action");
  lastSocket().push({ action: "error", error_code: 2004, error_reason: "not in the room", ref_action: "send_gift" });
  await assert.rejects(refused, (e) => e.code === 2004 && e.reason === "not in the room" && e.refAction === "send_gift");
  await assert.rejects(client.send("send_gift", {}), (e) => e.code === "timeout");
  client.close();
});

test("the relay report goes only after the hook resolved", async () => {
  let release;
  const hookCalled = [];
  const { client } = setup({
    relay: (n) => {
      hookCalled.push(n.msg_id);
      return new Promise((r) => (release = r));
    },
  });
  const seen = [];
  client.on("up", (n) => seen.push(n));
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  lastSocket().accept();
  await connecting;
  lastSocket().push({ action: "up", channel_name: "r", room_seat: { user_id: 9, id: 2 }, msg_id: "m9", relay: true });
  assert.equal(seen.length, 1);
  await until(() => hookCalled.length === 1, "the hook");
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(lastSocket().sent.length, 0, "no report before the hook resolved");
  release();
  await until(() => lastSocket().sent.length === 1, "the report");
  const report = lastSocket().sent[0];
  assert.equal(report.action, "up_deport");
  assert.equal(report.user_id, 9);
  assert.equal(report.msg_id, "m9");
  client.close();
});

test("a missing pong drops the link and reconnects", async () => {
  const { client } = setup({ pongTimeoutMs: 100 });
  const events = [];
  client.on("disconnected", (e) => events.push(e));
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  lastSocket().accept({ ping_interval: 1 });
  await connecting;
  await until(() => lastSocket().sent.some((f) => f.action === "ping"), "a ping", 3000);
  await until(() => events.length === 1, "the dead link", 3000);
  assert.equal(events[0].code, 4000);
  assert.equal(events[0].willReconnect, true);
  await until(() => FakeSocket.all.length === 2, "a new socket");
  client.close();
});

test("timestamps follow the server's clock, not a wrong local one", async () => {
  const { client } = setup({ now: () => Date.now() - 3_600_000 });
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  lastSocket().accept();
  await connecting;
  client.send("send_topic_msg", {}).catch(() => {});
  await until(() => lastSocket().sent.length === 1, "the action");
  const skew = Math.abs(lastSocket().sent[0].timestamp - Date.now() / 1000);
  assert.ok(skew < 3, `timestamp within 3 s of the server (was ${skew} s off)`);
  client.close();
});

test("a user-stream frame that is neither hang_up nor a ptp gift moves the user position, not the room's", async () => {
  const { client } = setup();
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  lastSocket().accept();
  await connecting;
  lastSocket().push({
    action: "room_state", channel_name: "r", room_id: 1, epoch: "roomep", seq: 5, members: [7], member_count: 1,
    seats: [], own_seat_id: null, call: null, attributes: {}, attributes_version: 0,
  });
  // A plugin's notify_user (and a bundled seat_invite): to this user only,
  // in the user's stream, whose epoch the client has not seen yet.
  lastSocket().push({ action: "seat_invite", channel_name: "r", seat_id: 2, msg_id: "m1", stream: "user", epoch: "userep", seq: 1 });
  lastSocket().push({ action: "custom_ping", msg_id: "m2", stream: "user", epoch: "userep", seq: 2 });
  assert.deepEqual(client.positions.room, { channelName: "r", epoch: "roomep", seq: 5 });
  assert.deepEqual(client.positions.user, { epoch: "userep", seq: 2 });
  // A room frame still moves the room position.
  lastSocket().push({ action: "send_topic_msg", channel_name: "r", content: "hi", msg_id: "m3", stream: "room", epoch: "roomep", seq: 6 });
  assert.deepEqual(client.positions.room, { channelName: "r", epoch: "roomep", seq: 6 });
  assert.deepEqual(client.positions.user, { epoch: "userep", seq: 2 });
  // And a reconnection names both streams where they stand.
  lastSocket().drop(1006);
  await until(() => FakeSocket.all.length === 2, "a second socket");
  const q = new URL(lastSocket().url).searchParams;
  assert.equal(q.get("resume_seq"), "6");
  assert.equal(q.get("resume_epoch"), "roomep");
  assert.equal(q.get("resume_user_epoch"), "userep");
  assert.equal(q.get("resume_user_seq"), "2");
  client.close();
});

test("notification: a plugin's own and the seed's, each once; a frame a resume already delivered is not one", async () => {
  const { client } = setup();
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  lastSocket().accept();
  await connecting;
  const notifications = [];
  const gifts = [];
  const frames = [];
  client.on("notification", (n) => notifications.push(`${n.action}:${n.seq ?? "-"}`));
  client.on("send_gift", (g) => gifts.push(g.seq));
  client.on("frame", (f) => frames.push(f.action));
  lastSocket().push({
    action: "room_state", channel_name: "r", room_id: 1, epoch: "e", seq: 5, members: [7], member_count: 1,
    seats: [], own_seat_id: null, call: null, attributes: {}, attributes_version: 0,
  });
  // Already in the snapshot (seq 5): dropped, whatever its action.
  lastSocket().push({ action: "lucky_draw", channel_name: "r", winner_id: 7, msg_id: "m0", stream: "room", epoch: "e", seq: 5 });
  lastSocket().push({ action: "lucky_draw", channel_name: "r", winner_id: 7, msg_id: "m1", stream: "room", epoch: "e", seq: 6 });
  lastSocket().push({ action: "send_gift", channel_name: "r", notify_type: "bc", gift: {}, msg_id: "m2", stream: "room", epoch: "e", seq: 7 });
  // An unstamped one (a broadcast to everyone).
  lastSocket().push({ action: "room_notice", channel_name: "", content: "hi", msg_id: "m3" });
  lastSocket().push({ action: "pong", server_time: Math.floor(Date.now() / 1000) });
  try {
    assert.deepEqual(notifications, ["lucky_draw:6", "send_gift:7", "room_notice:-"]);
    assert.deepEqual(gifts, [7]);
    // `frame` is every frame, the dropped one included.
    assert.equal(frames.filter((a) => a === "lucky_draw").length, 2);
  } finally {
    client.close();
  }
});
