/**
 * Close codes with their reconnect verdicts, and error codes, as the
 * protocol (and the server's `chorus_protocol::codes`) define them.
 *
 * @module
 */

/** WebSocket close codes the server uses. */
export const CloseCode = {
  /** 1000: closed on purpose by this client ({@link ChorusClient.close}). */
  NORMAL: 1000,
  /** 1001: the server is shutting down. May reconnect. */
  GOING_AWAY: 1001,
  /** 1006: the connection dropped without a close frame. May reconnect. */
  ABNORMAL: 1006,
  /** 1009: a frame exceeded `limits.max_frame_bytes`. May not reconnect. */
  FRAME_TOO_LARGE: 1009,
  /** 4000: no valid frame within `ping_timeout` (also used by this client
   * when a `pong` does not come back). May reconnect. */
  HEARTBEAT_TIMEOUT: 4000,
  /** 4001: the sid expired or was revoked. May not reconnect: get new
   * credentials from the app backend first. */
  AUTH_FAILED: 4001,
  /** 4008: too many bad frames within 10 s. May not reconnect. */
  TOO_MANY_BAD_FRAMES: 4008,
  /** 4009: a newer connection of the same user replaced this one. May not
   * reconnect: two devices would keep replacing each other. */
  REPLACED: 4009,
  /** 4010: the app backend kicked the user. May not reconnect. */
  KICKED: 4010,
  /** 4011: this client read too slowly and its queue filled. May reconnect. */
  SLOW_CONSUMER: 4011,
} as const;

const NO_RECONNECT: ReadonlySet<number> = new Set([
  CloseCode.FRAME_TOO_LARGE,
  CloseCode.AUTH_FAILED,
  CloseCode.TOO_MANY_BAD_FRAMES,
  CloseCode.REPLACED,
  CloseCode.KICKED,
]);

/**
 * Whether a client may reconnect by itself after a close with `code`.
 * Codes not listed (network failures, server errors) are transient: true.
 */
export function mayReconnect(code: number): boolean {
  return !NO_RECONNECT.has(code);
}

/** A short name for a close code, for logs and UIs. */
export function closeReason(code: number): string {
  switch (code) {
    case CloseCode.NORMAL:
      return "closed by the client";
    case CloseCode.GOING_AWAY:
      return "server shutting down";
    case CloseCode.ABNORMAL:
      return "connection lost";
    case CloseCode.FRAME_TOO_LARGE:
      return "frame too large";
    case CloseCode.HEARTBEAT_TIMEOUT:
      return "heartbeat timeout";
    case CloseCode.AUTH_FAILED:
      return "auth failed";
    case CloseCode.TOO_MANY_BAD_FRAMES:
      return "too many bad frames";
    case CloseCode.REPLACED:
      return "replaced by a newer connection";
    case CloseCode.KICKED:
      return "kicked";
    case CloseCode.SLOW_CONSUMER:
      return "slow consumer";
    default:
      return `closed with ${code}`;
  }
}

/** Error codes of `error` frames and HTTP error bodies (PROTOCOL 4). */
export const ErrorCode = {
  MALFORMED_FRAME: 1001,
  MISSING_FIELD: 1002,
  BAD_SIGNATURE: 1003,
  STALE_TIMESTAMP: 1004,
  REPLAYED: 1005,
  BAD_ONLINE_TOKEN: 1006,
  UNKNOWN_ACTION: 1007,
  RATE_LIMITED: 1008,
  PLUGIN_REJECTED: 2001,
  PLUGIN_FAILED: 2002,
  CONFLICT: 2003,
  NOT_ALLOWED: 2004,
  /** Chorus addition: the state store did not confirm the change in time;
   * it may have been applied (read the state before retrying). HTTP 504. */
  OUTCOME_UNKNOWN: 2005,
} as const;

/** Failures of the SDK itself, beside the server's numeric codes. */
export type LocalErrorCode =
  /** No answer within the action's timeout. */
  | "timeout"
  /** The connection closed before the answer came; the action may or may
   * not have been applied. */
  | "disconnected"
  /** Not connected when the action was sent. */
  | "not_connected"
  /** The credentials were refused (HTTP 401): no reconnection. */
  | "auth"
  /** An HTTP call failed (network, or a status without a JSON body). */
  | "http";

/**
 * An error from the server (`code` is its number, `reason` its
 * `error_reason`) or from the SDK (`code` is a {@link LocalErrorCode}).
 */
export class ChorusError extends Error {
  /** The server's error code, or the SDK's reason. */
  readonly code: number | LocalErrorCode;
  /** The server's `error_reason`, or the SDK's explanation. */
  readonly reason: string;
  /** The action the error answers, when there is one. */
  readonly refAction: string | undefined;
  /** The HTTP status, for errors of an HTTP call. */
  readonly status: number | undefined;

  constructor(
    code: number | LocalErrorCode,
    reason: string,
    details: { refAction?: string; status?: number } = {},
  ) {
    const where = details.refAction ? ` (${details.refAction})` : "";
    super(`chorus ${code}${where}: ${reason}`);
    this.name = "ChorusError";
    this.code = code;
    this.reason = reason;
    this.refAction = details.refAction;
    this.status = details.status;
  }
}
