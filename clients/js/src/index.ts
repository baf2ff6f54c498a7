/**
 * The Chorus client SDK: signed frames, heartbeat, reconnection, typed
 * notifications, acknowledged actions and the relay duty.
 *
 * ```ts
 * const client = new ChorusClient({ baseUrl, userId, sid, signKey, relay });
 * client.on("send_topic_msg", (m) => show(m.user_id, m.content));
 * await client.connect();
 * await client.send("send_topic_msg", { channel_name: "room_88", content: "hi" });
 * ```
 *
 * @module
 */

export { ChorusClient } from "./client.js";
export type {
  Ack,
  ChorusOptions,
  ClientEvents,
  ConnectedInfo,
  ConnectionState,
  DisconnectInfo,
  Logger,
  RoomInfo,
  ServerFrame,
  UserInfo,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { backoffDelay, type BackoffOptions } from "./backoff.js";
export {
  CanonicalError,
  canonicalFrame,
  canonicalJson,
  canonicalQuery,
  compareUtf8,
  frameToJson,
  type Frame,
  type FrameValue,
} from "./canonical.js";
export { ChorusError, CloseCode, ErrorCode, closeReason, mayReconnect, type LocalErrorCode } from "./codes.js";
export { defaultHmac, hmacSha256, sha256, softwareHmac, toHex, webCryptoHmac, type Hmac } from "./hmac.js";
export { NOTIFICATION_ACTIONS, reportFor } from "./notifications.js";
export type * from "./notifications.js";
export { ServerClock, Signer, type Credentials } from "./signer.js";
