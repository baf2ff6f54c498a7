// The SDK against the real server (target/debug/chorus serve --dev):
// actions and their acks, notifications, the relay duty and its reports,
// errors, and the close codes the server can be made to send.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ChorusClient, ChorusError } from "../../dist/index.js";
import { next, startServer, until } from "../support/server.mjs";
import { collect, connectUser, enterRoom, recorder } from "../support/users.mjs";

let server;
const clients = [];
const user = async (id, options) => {
  const client = await connectUser(server, id, options);
  clients.push(client);
  return client;
};

before(async () => {
  server = await startServer({
    // A delegate that does not report is replaced after 1 s, not 5.
    env: { CHORUS_RELAY__REPORT_TIMEOUT: "1s" },
  });
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

test("chat: the ack carries the msg_ids; the delegate relays, then reports", async () => {
  const relayed = [];
  let release;
  const gate = new Promise((r) => (release = r));
  const a = await user(101);
  const b = await user(102, {
    relay: async (n) => {
      relayed.push(n);
      await gate;
    },
  });
  await enterRoom(server, 101, "flows_chat");
  await enterRoom(server, 102, "flows_chat");
  const completedBefore = await server.metric("chorus_relay_outcomes_total", 'outcome="completed"');
  const seen = next(b, "send_topic_msg");
  const ack = await a.send("send_topic_msg", { channel_name: "flows_chat", content: "hello 你好" });
  assert.equal(ack.refAction, "send_topic_msg");
  assert.equal(ack.msgIds.length, 1);
  const message = await seen;
  assert.equal(message.content, "hello 你好");
  assert.equal(message.user_id, 101);
  assert.equal(message.relay, true);
  assert.equal(message.msg_id, ack.msgIds[0]);
  await until(() => relayed.length === 1, "the relay hook");
  // Held in the hook: the relay is not complete.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await server.metric("chorus_relay_outcomes_total", 'outcome="completed"'), completedBefore);
  release();
  await until(
    async () => (await server.metric("chorus_relay_outcomes_total", 'outcome="completed"')) === completedBefore + 1,
    "the report to complete the relay",
  );
});

test("seat and gift: up (reported as up_deport) and send_gift reach the other member", async () => {
  const reports = [];
  const a = await user(111);
  const b = await user(112, { relay: async (n) => void reports.push(n.action) });
  await enterRoom(server, 111, "flows_seat");
  await enterRoom(server, 112, "flows_seat");
  const completed = await server.metric("chorus_relay_outcomes_total", 'outcome="completed"');
  const up = next(b, "up");
  const upAck = await server.api.action("up", {
    user_id: 111, channel_name: "flows_seat", seat_id: 3, nickname: "a", sex: 1, avatar_url: "", avatar_small_url: "",
  });
  const upFrame = await up;
  assert.equal(upFrame.room_seat.user_id, 111);
  assert.equal(upFrame.room_seat.id, 3);
  assert.equal(upFrame.msg_id, upAck.msg_ids[0]);
  // Gifts come from the app backend (a client's send_gift is refused by
  // default: [actions.send_gift]).
  const gift = next(b, "send_gift");
  const ack = await server.api.action("send_gift", {
    channel_name: "flows_seat", notify_type: "bc",
    gift: { id: 7, sender_id: 111, receiver_id: 112, num: 2, name: "rose" },
  });
  const g = (await gift).gift;
  assert.equal(g.sender_id, 111);
  assert.equal(g.sender_room_seat_id, 3);
  assert.equal(g.num, 2);
  assert.equal(ack.msg_ids.length, 1);
  await until(() => reports.length === 2, "both relays");
  await until(
    async () => (await server.metric("chorus_relay_outcomes_total", 'outcome="completed"')) === completed + 2,
    "both reports to complete their relays",
  );
  // The server matched `up_deport` to the `up` relay: nothing unmatched.
  assert.equal(await server.metric("chorus_relay_unmatched_reports_total"), 0);
});

test("a delegate whose hook fails does not report; the server moves to the next member", async () => {
  const a = await user(121);
  const failing = await user(122, {
    relay: async () => {
      throw new Error("the RTC provider is down");
    },
  });
  const c = await user(123, { relay: async () => {} });
  await enterRoom(server, 121, "flows_failover");
  await enterRoom(server, 122, "flows_failover");
  await enterRoom(server, 123, "flows_failover");
  const atB = collect(failing, "send_topic_msg");
  const atC = collect(c, "send_topic_msg");
  const ack = await a.send("send_topic_msg", { channel_name: "flows_failover", content: "anyone?" });
  await until(() => atB.length + atC.length === 2, "two attempts (report_timeout 1 s)", 10_000);
  // Seats first, then join order: 122 joined before 123.
  assert.equal(atB[0].msg_id, ack.msgIds[0]);
  assert.equal(atC[0].msg_id, ack.msgIds[0]);
  assert.ok(failing.logger.lines.some((l) => l.includes("relay hook failed")));
});

test("errors: the server's code and reason reject the action", async () => {
  const a = await user(131);
  await assert.rejects(
    a.send("send_topic_msg", { channel_name: "nowhere", content: "hi" }),
    (e) => e instanceof ChorusError && e.code === 2004 && e.refAction === "send_topic_msg",
  );
  await enterRoom(server, 131, "flows_errors");
  await assert.rejects(
    a.send("send_topic_msg", { channel_name: "flows_errors", content: "" }),
    (e) => e.code === 2001 && e.reason.length > 0,
  );
  await assert.rejects(
    a.send("send_gift", { channel_name: "flows_errors", notify_type: "bc", gift: { id: 1, receiver_id: 131, num: 1 } }),
    (e) => e.code === 1007,
  );
  await assert.rejects(a.send("no_such_action", {}), (e) => e.code === 1007);
  await assert.rejects(a.send("enter_room", { channel_name: "x" }), (e) => e.code === 1007);
  // Two identical actions in one second are both accepted (nonces).
  const same = { channel_name: "flows_errors", content: "twice" };
  const [x, y] = await Promise.all([a.send("send_topic_msg", same), a.send("send_topic_msg", same)]);
  assert.notEqual(x.msgIds[0], y.msgIds[0]);
  assert.equal(a.state, "connected");
});

test("bad credentials: 401 rejects connect with a clear error and no retry loop", async () => {
  let calls = 0;
  const logger = recorder();
  const client = new ChorusClient({
    baseUrl: server.baseUrl,
    userId: 141,
    sid: "141.1893456000.forged.0000000000000000000000000000000000000000000000000000000000000000",
    signKey: "0".repeat(64),
    logger,
    fetch: (...args) => {
      calls += 1;
      return fetch(...args);
    },
  });
  const errors = collect(client, "error");
  await assert.rejects(client.connect(), (e) => e.status === 401 && e.code === 1003);
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(calls, 1);
  assert.equal(client.state, "closed");
  assert.equal(errors.length, 1);
});

test("4009: a second connection of the user replaces the first, which does not reconnect", async () => {
  const first = await user(151);
  const kicked = next(first, "kicked");
  const closed = next(first, "disconnected");
  const second = await user(151);
  assert.equal((await kicked).reason, "replaced");
  const info = await closed;
  assert.equal(info.code, 4009);
  assert.equal(info.willReconnect, false);
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(first.state, "closed");
  assert.equal(second.state, "connected");
});

test("4010: a kick by the app backend stops the client, with the reason", async () => {
  const client = await user(161);
  const closed = next(client, "disconnected");
  await server.api.request("POST", "/api/v1/users/161/kick", { reason: "banned for a day" });
  const info = await closed;
  assert.equal(info.code, 4010);
  assert.equal(info.mayReconnect, false);
  assert.equal(info.kickedReason, "banned for a day");
  assert.equal(client.state, "closed");
});

test("clock skew: a device an hour behind still signs fresh frames", async () => {
  const client = await user(171, { now: () => Date.now() - 3_600_000 });
  await enterRoom(server, 171, "flows_skew");
  const ack = await client.send("send_topic_msg", { channel_name: "flows_skew", content: "late clock" });
  assert.equal(ack.msgIds.length, 1);
  assert.ok(Math.abs(client.serverTime() - Date.now() / 1000) < 3);
});
