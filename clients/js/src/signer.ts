/**
 * Signing of queries and frames with a session's sign_key (PROTOCOL
 * section 2), and the clock the timestamps come from.
 *
 * @module
 */

import { canonicalFrame, canonicalQuery, type Frame } from "./canonical.js";
import type { Hmac } from "./hmac.js";

/** A session's credentials, as the app backend hands them to the client. */
export interface Credentials {
  /** The user. */
  userId: number | bigint;
  /** The session token. */
  sid: string;
  /** `hex(HMAC-SHA256(app_secret, "sign." + sid))`. */
  signKey: string;
}

/**
 * The server's clock as seen from here: the local clock plus an offset
 * learnt from `server_time` (in `connected` and `pong`) or an HTTP `Date`
 * header, so a device whose clock is wrong still signs fresh timestamps.
 */
export class ServerClock {
  /** Server time minus local time, in milliseconds. */
  private offsetMs = 0;

  /** @param now the local clock in milliseconds (`Date.now` by default). */
  constructor(private readonly now: () => number = Date.now) {}

  /** The server's current unix time in whole seconds. */
  unixSeconds(): number {
    return Math.floor((this.now() + this.offsetMs) / 1000);
  }

  /** The current offset in milliseconds (server minus local). */
  offset(): number {
    return this.offsetMs;
  }

  /**
   * Learns the server's time (unix seconds). A second of resolution is
   * plenty against a skew window of minutes, so differences under 1.5 s
   * are left alone rather than made to jitter.
   */
  observe(serverUnixSeconds: number): void {
    const offset = serverUnixSeconds * 1000 + 500 - this.now();
    if (Math.abs(offset - this.offsetMs) >= 1500) this.offsetMs = offset;
  }
}

/** Signs with one session's credentials. */
export class Signer {
  /** Canonical strings signed this second, to spot a frame that repeats. */
  private recent = new Set<string>();
  private recentSecond = -1;
  private counter = 0;

  constructor(
    private readonly credentials: Credentials,
    private readonly hmac: Hmac,
  ) {}

  /** `hex(HMAC-SHA256(sign_key, canonical))`. */
  sign(canonical: string): Promise<string> {
    return this.hmac(this.credentials.signKey, canonical);
  }

  /**
   * The signed public parameters (`user_id`, `sid`, `timestamp`, `sign`,
   * and `nonce` if given) as a query string.
   */
  async query(timestamp: number, nonce?: string, extra: Record<string, string> = {}): Promise<string> {
    const params: Record<string, string> = {
      ...extra,
      user_id: String(this.credentials.userId),
      sid: this.credentials.sid,
      timestamp: String(timestamp),
    };
    if (nonce !== undefined) params.nonce = nonce;
    params.sign = await this.sign(canonicalQuery(params));
    return new URLSearchParams(params).toString();
  }

  /**
   * Completes a frame with `online_token`, `timestamp` and `sid`, adds a
   * `nonce` when the same frame was already signed within this second
   * (the server would refuse it as a replay), and signs it.
   */
  async frame(fields: Frame, onlineToken: string, timestamp: number): Promise<Frame> {
    const frame: Frame = {
      ...fields,
      online_token: onlineToken,
      timestamp,
      sid: this.credentials.sid,
    };
    if (frame.nonce === undefined && this.repeats(canonicalFrame(frame), timestamp)) {
      frame.nonce = this.nonce();
    }
    frame.sign = await this.sign(canonicalFrame(frame));
    return frame;
  }

  /** A nonce unique within this client. */
  nonce(): string {
    this.counter += 1;
    return `${this.counter.toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  }

  /** True when `canonical` was already signed at `timestamp`. */
  private repeats(canonical: string, timestamp: number): boolean {
    if (timestamp !== this.recentSecond) {
      this.recent.clear();
      this.recentSecond = timestamp;
    }
    if (this.recent.has(canonical)) return true;
    this.recent.add(canonical);
    return false;
  }
}
