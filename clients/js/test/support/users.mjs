// Users of the tests: credentials from the server API, a client, and a
// place in a room through the server API (enter_room is server-only).
import { ChorusClient } from "../../dist/index.js";

/** A quiet logger that keeps what it was told. */
export function recorder() {
  const lines = [];
  return { lines, warn: (...a) => lines.push(a.join(" ")), debug: () => {} };
}

/** A connected client for `userId`, with options on top of the defaults. */
export async function connectUser(server, userId, options = {}) {
  const session = await server.api.request("POST", "/api/v1/sessions", { user_id: userId, ttl_s: 3600 });
  const logger = recorder();
  const client = new ChorusClient({
    baseUrl: server.baseUrl,
    userId,
    sid: session.sid,
    signKey: session.sign_key,
    logger,
    reconnect: { initialMs: 200, maxMs: 1000 },
    ...options,
  });
  client.logger = logger;
  client.credentials = session;
  await client.connect();
  return client;
}

/** Puts `userId` in `channel` through the server API. */
export function enterRoom(server, userId, channel, extra = {}) {
  return server.api.action("enter_room", {
    user_id: userId, channel_name: channel, room_id: 88, nickname: `user ${userId}`, sex: 1,
    avatar_url: "", avatar_small_url: "", i_segment: "newcomer", ...extra,
  });
}

/** Collects every event `name` of `client`. */
export function collect(client, name) {
  const events = [];
  client.on(name, (e) => events.push(e));
  return events;
}
