/**
 * The app backend's side of the protocol, for Node services and tests:
 * minting a user's sid and sign_key (PROTOCOL section 1) and calling the
 * server API with signed requests (section 8). Never ship this to a
 * client: it needs the `app_secret`.
 *
 * @module
 */

import { defaultHmac, type Hmac } from "./hmac.js";

/** Credentials for a user, as `chorus token` prints them. */
export interface IssuedSession {
  user_id: number;
  sid: string;
  sign_key: string;
  expires_at: number;
}

/** `<user_id>.<expires_at>.<nonce>.hex(HMAC-SHA256(app_secret, payload))`. */
export async function mintSid(
  appSecret: string,
  userId: number | bigint,
  expiresAt: number,
  nonce: string,
  hmac: Hmac = defaultHmac,
): Promise<string> {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(nonce)) {
    throw new Error("a sid nonce is 1 to 64 characters of [A-Za-z0-9_-]");
  }
  const payload = `${userId}.${expiresAt}.${nonce}`;
  return `${payload}.${await hmac(appSecret, payload)}`;
}

/** `hex(HMAC-SHA256(app_secret, "sign." + sid))`. */
export function signKeyFor(appSecret: string, sid: string, hmac: Hmac = defaultHmac): Promise<string> {
  return hmac(appSecret, `sign.${sid}`);
}

/** A random nonce of 16 characters of `[A-Za-z0-9_-]`. */
export function randomNonce(): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b & 63]).join("");
}

/** Mints a session for `userId`, valid `ttlS` seconds. */
export async function issueSession(
  appSecret: string,
  userId: number,
  ttlS = 86_400,
  hmac: Hmac = defaultHmac,
): Promise<IssuedSession> {
  const expiresAt = Math.floor(Date.now() / 1000) + ttlS;
  const sid = await mintSid(appSecret, userId, expiresAt, randomNonce(), hmac);
  return { user_id: userId, sid, sign_key: await signKeyFor(appSecret, sid, hmac), expires_at: expiresAt };
}

/** `hex(HMAC-SHA256(app_secret, timestamp\nnonce\nMETHOD\npath_and_query\nbody))`. */
export function serverApiSignature(
  appSecret: string,
  timestamp: string,
  nonce: string,
  method: string,
  pathAndQuery: string,
  body: string,
  hmac: Hmac = defaultHmac,
): Promise<string> {
  return hmac(appSecret, `${timestamp}\n${nonce}\n${method}\n${pathAndQuery}\n${body}`);
}

/** A failed server API call: the HTTP status and the protocol's error. */
export class ServerApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    readonly reason: string,
  ) {
    super(`server API ${status} (${code}): ${reason}`);
    this.name = "ServerApiError";
  }
}

/** A client of the server API (`/api/v1`). */
export class ServerApi {
  constructor(
    private readonly baseUrl: string,
    private readonly appSecret: string,
    private readonly hmac: Hmac = defaultHmac,
  ) {}

  /** Sends a signed request; resolves with the JSON body of a 2xx. */
  async request(method: string, path: string, body?: unknown): Promise<Record<string, any>> {
    const text = body === undefined ? "" : JSON.stringify(body);
    const timestamp = String(Math.floor(Date.now() / 1000));
    const nonce = randomNonce();
    const signature = await serverApiSignature(this.appSecret, timestamp, nonce, method, path, text, this.hmac);
    const response = await fetch(`${this.baseUrl.replace(/\/+$/, "")}${path}`, {
      method,
      headers: {
        "content-type": "application/json",
        "x-chorus-timestamp": timestamp,
        "x-chorus-nonce": nonce,
        "x-chorus-signature": signature,
      },
      body: method === "GET" ? undefined : text,
    });
    const json = (await response.json().catch(() => ({}))) as Record<string, any>;
    if (!response.ok) {
      throw new ServerApiError(response.status, Number(json.error_code ?? 0), String(json.error_reason ?? ""));
    }
    return json;
  }

  /** `POST /api/v1/actions`. */
  action(action: string, fields: Record<string, unknown>): Promise<Record<string, any>> {
    return this.request("POST", "/api/v1/actions", { action, ...fields });
  }
}
