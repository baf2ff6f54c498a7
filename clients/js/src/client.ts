/**
 * {@link ChorusClient}: one user's connection to Chorus.
 *
 * A state machine (`idle` → `connecting` → `connected` → `reconnecting` →
 * … → `closed`) over one WebSocket at a time. Each attempt discovers the
 * endpoint with a freshly signed query (which also tells a refused
 * credential, HTTP 401, from a network failure: a browser WebSocket
 * cannot see the status of a refused upgrade), then connects with
 * another freshly signed query.
 *
 * @module
 */

import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { frameToJson, type Frame, type FrameValue } from "./canonical.js";
import { ChorusError, CloseCode, closeReason, mayReconnect } from "./codes.js";
import { Emitter } from "./emitter.js";
import { defaultHmac, type Hmac } from "./hmac.js";
import {
  NOTIFICATION_ACTIONS,
  reportFor,
  type Notification,
  type Notifications,
} from "./notifications.js";
import { ServerClock, Signer, type Credentials } from "./signer.js";

/** Where the SDK writes what the app may want to know but need not act on. */
export interface Logger {
  warn(message: string, ...details: unknown[]): void;
  debug?(message: string, ...details: unknown[]): void;
}

/** The parts of a WebSocket the client uses (the browser's, Node 22's,
 * Node 20's with `--experimental-websocket`, React Native's). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What a client needs. */
export interface ChorusOptions extends Credentials {
  /** Where `/iapi` is served, e.g. `http://127.0.0.1:9999`. */
  baseUrl: string;
  /**
   * The relay duty (seed 2.4): called with a notification the server chose
   * this client to pass on to the room through the app's RTC provider's
   * signaling. The SDK reports it (`<action>_report`, `up_deport` for
   * `up`) once the returned promise resolves; if it rejects, nothing is
   * reported and the server tries another member. Without a hook, relay
   * duties are not reported (a report says the room was told).
   */
  relay?: (notification: Notification) => Promise<void> | void;
  /** HMAC-SHA256 implementation; default WebCrypto (see `hmac.ts`). */
  hmac?: Hmac;
  /** Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** The local clock in ms, default `Date.now` (tests skew it). */
  now?: () => number;
  /** Default `console`. */
  logger?: Logger;
  /** How long an action waits for its `ack` or `error`, ms (default 10 000). */
  actionTimeoutMs?: number;
  /** How long a `ping` waits for its `pong` before the link is taken for
   * dead, ms (default: the announced `ping_interval`, at least 2 000). */
  pongTimeoutMs?: number;
  /** How long an `/iapi` request may take, ms (default 10 000). */
  httpTimeoutMs?: number;
  /** How long an opened socket may take to send `connected`, ms (10 000). */
  connectTimeoutMs?: number;
  /** Reconnect by itself when the close code allows it (default true),
   * with these backoff settings. */
  reconnect?: boolean | BackoffOptions;
}

/** The connection's state. */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

/** What the server's `connected` frame says. */
export interface ConnectedInfo {
  onlineToken: string;
  /** Seconds between pings. */
  pingInterval: number;
  /** Seconds of silence after which the server closes with 4000. */
  pingTimeout: number;
  /** The server's unix time in seconds. */
  serverTime: number;
  userId: number;
  /** `""` when in no room. */
  currentRoomId: string;
  channelName: string;
  /** True from the second connection of this client on. */
  reconnected: boolean;
}

/** Why the connection ended, and what happens next. */
export interface DisconnectInfo {
  /** The close code (1006 when the connection dropped, 4000 when this
   * client gave up waiting for a pong). */
  code: number;
  /** The server's close reason, or a short description of the code. */
  reason: string;
  /** The protocol's verdict for the code. */
  mayReconnect: boolean;
  /** Whether this client will reconnect (the verdict, unless reconnection
   * is turned off or the app closed the client). */
  willReconnect: boolean;
  /** The reason of a `kicked` frame received just before, if any. */
  kickedReason?: string;
}

/** The user's room as the server knows it. */
export interface RoomInfo {
  /** The app backend's room id, as a string. */
  roomId: string;
  channelName: string;
}

/** `/iapi/user/info`. */
export interface UserInfo {
  userId: number;
  online: boolean;
  /** Null when the user is in no room. */
  room: RoomInfo | null;
}

/** The answer to an action. */
export interface Ack<R = Record<string, unknown>> {
  refAction: string;
  /** The ids of the notifications the action produced. */
  msgIds: string[];
  /** The plugin's result. */
  result: R;
}

/** A place in a notification stream (README, "Recovery after a dropped
 * link"): the stream's `epoch` and the `seq` of the last notification
 * this client got. */
export interface StreamPosition {
  epoch: string;
  seq: number;
}

/** Where this client stands in its room's stream and its own. */
export interface Positions {
  /** The room's stream, once a stamped room frame or `room_state` came. */
  room: (StreamPosition & { channelName: string }) | null;
  /** The user's own (point-to-point) stream. */
  user: StreamPosition | null;
}

/** The server's `room_state`: the room after notification `seq`. */
export interface RoomState {
  channel_name: string;
  room_id: number;
  epoch: string;
  seq: number;
  members: number[];
  member_count: number;
  seats: Array<{ id: number; user_id: number | null; status: number; microphone: number; rank: number }>;
  own_seat_id: number | null;
  call: { peer_id: number; channel_name: string } | null;
  attributes: Record<string, string>;
  attributes_version: number;
}

/** A frame from the server, as parsed. */
export type ServerFrame = { action: string } & Record<string, unknown>;

/** Every event of the client, by name. */
export interface ClientEvents extends Notifications {
  /** The state changed. */
  state: { state: ConnectionState; previous: ConnectionState };
  /** A connection is up. */
  connected: ConnectedInfo;
  /** A connection ended. */
  disconnected: DisconnectInfo;
  /** The server sent `kicked` (4009 replaced, 4010 kicked by the backend). */
  kicked: { reason: string };
  /** Seed 2.2: after a reconnection the server no longer has the user in
   * the room it was in: leave the RTC channel (no exit call is needed). */
  removedFromRoom: { previous: RoomInfo };
  /** An error the app did not ask for: refused credentials (the client
   * stops), or an error frame that answers no pending action. */
  error: ChorusError;
  /** Every frame from the server, after the SDK handled it: duplicates a
   * resume dropped included. Prefer `notification` for what users see. */
  frame: ServerFrame;
  /** Every notification, the seed's (also emitted under their own names:
   * `send_gift`, `up`, …) and a plugin's own (`lucky_draw`,
   * `seat_invite`, or a new team's action), once: a frame the last
   * `room_state` or `resumed` already accounted for (at or below its
   * `seq`) is not emitted again. Control frames (`connected`, `pong`, `ack`, `error`, `kicked`,
   * `room_state`, `resumed`, `room_attributes`) are not notifications. */
  notification: ServerFrame;
  /** The room's state (on entering a room, or after a resume that could
   * not be recovered); room notifications that follow have a greater
   * `seq`. */
  roomState: RoomState;
  /** The answer to a resume after a reconnection: `recovered` true when
   * every missed notification was delivered again, in order, before it. */
  resumed: { recovered: boolean; positions: Positions };
  /** The room's attributes changed (`room_attributes`). */
  roomAttributes: { channel_name: string; version: number; attributes: Record<string, string> };
}

/** A sent action awaiting its answer. */
interface Pending {
  action: string;
  nonce: string;
  resolve: (ack: Ack<any>) => void;
  reject: (error: ChorusError) => void;
  timer: ReturnType<typeof setTimeout>;
}

const OPEN = 1;

/** One user's connection to Chorus. */
export class ChorusClient extends Emitter<ClientEvents> {
  /** The connection's current state. */
  state: ConnectionState = "idle";
  /** The user's room as last learnt (`connected`, `/iapi/user/info`, or
   * this user's own `enter_room` / `exit_room`). */
  room: RoomInfo | null = null;
  /** Where this client stands in its streams; sent as the resume of the
   * next reconnection, so the server replays what was missed. */
  positions: Positions = { room: null, user: null };
  /** Room frames at or below this were in the last snapshot or replay. */
  private roomFloor: StreamPosition | null = null;

  private readonly options: ChorusOptions;
  private readonly signer: Signer;
  private readonly clock: ServerClock;
  private readonly logger: Logger;
  private socket: WebSocketLike | null = null;
  private onlineToken: string | null = null;
  private everConnected = false;
  private attempt = 0;
  private pending: Pending[] = [];
  private kickedReason: string | undefined;
  private timers = {
    ping: undefined as ReturnType<typeof setInterval> | undefined,
    pong: undefined as ReturnType<typeof setTimeout> | undefined,
    connect: undefined as ReturnType<typeof setTimeout> | undefined,
    retry: undefined as ReturnType<typeof setTimeout> | undefined,
  };
  private pongTimeoutMs = 2000;
  private waiters: { resolve: (info: ConnectedInfo) => void; reject: (e: Error) => void }[] = [];
  private warnedNoRelayHook = false;

  constructor(options: ChorusOptions) {
    const logger = options.logger ?? console;
    super((name, error) => logger.warn(`chorus: a listener of "${name}" threw`, error));
    this.options = options;
    this.logger = logger;
    this.clock = new ServerClock(options.now ?? Date.now);
    this.signer = new Signer(options, options.hmac ?? defaultHmac);
  }

  /** The server's current unix time in seconds, as this client sees it. */
  serverTime(): number {
    return this.clock.unixSeconds();
  }

  /**
   * Connects (or, after `close`, connects again). Resolves on the first
   * `connected` frame; keeps retrying transient failures meanwhile;
   * rejects when the credentials are refused or the client is closed.
   */
  connect(): Promise<ConnectedInfo> {
    const done = new Promise<ConnectedInfo>((resolve, reject) =>
      this.waiters.push({ resolve, reject }),
    );
    if (this.state === "idle" || this.state === "closed") {
      this.attempt = 0;
      this.everConnected = false;
      this.setState("connecting");
      void this.open();
    } else if (this.state === "connected" && this.lastConnected) {
      this.settleWaiters(this.lastConnected);
    }
    return done;
  }

  /** Closes the connection for good (code 1000); pending actions fail. */
  close(): void {
    const wasOpen = this.socket !== null;
    this.clearTimers();
    this.setState("closed");
    if (this.socket) {
      const socket = this.detach();
      try {
        socket.close(CloseCode.NORMAL, "client closed");
      } catch {
        // Already closing: nothing to do.
      }
    }
    this.failPending("disconnected", "the client was closed");
    this.rejectWaiters(new ChorusError("disconnected", "the client was closed"));
    if (wasOpen) {
      this.emit("disconnected", {
        code: CloseCode.NORMAL,
        reason: closeReason(CloseCode.NORMAL),
        mayReconnect: false,
        willReconnect: false,
      });
    }
  }

  /**
   * Sends a client action (one a plugin accepts from clients and the
   * operator allows, such as `send_topic_msg`, `call_start`,
   * `call_answer`, `hang_up`; `send_gift` only where the operator allows
   * it from clients). Resolves on
   * the server's `ack`; rejects with a {@link ChorusError} carrying the
   * server's `error_code` and `error_reason`, or `timeout`,
   * `disconnected`, `not_connected`. Each action carries a `nonce`, which
   * the `ack` echoes, so identical actions never look like replays.
   */
  send<R = Record<string, unknown>>(
    action: string,
    fields: Record<string, FrameValue> = {},
    options: { timeoutMs?: number } = {},
  ): Promise<Ack<R>> {
    const nonce = this.signer.nonce();
    return new Promise<Ack<R>>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.options.actionTimeoutMs ?? 10_000;
      const entry: Pending = {
        action,
        nonce,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.removePending(entry);
          reject(new ChorusError("timeout", `no answer within ${timeoutMs} ms`, { refAction: action }));
        }, timeoutMs),
      };
      this.pending.push(entry);
      this.sendFrame({ ...fields, action, nonce }).catch((error: unknown) => {
        this.removePending(entry);
        reject(
          error instanceof ChorusError
            ? error
            : new ChorusError("not_connected", String(error), { refAction: action }),
        );
      });
    });
  }

  /** Asks `/iapi/user/info` where the user is, and remembers it. */
  async refreshRoom(): Promise<UserInfo> {
    const body = await this.signedGet("/iapi/user/info");
    const roomId = String(body.current_room_id ?? "");
    const info: UserInfo = {
      userId: Number(body.user_id),
      online: Boolean(body.online),
      room: roomId === "" ? null : { roomId, channelName: String(body.channel_name ?? "") },
    };
    this.room = info.room;
    return info;
  }

  // ---- connection lifecycle -------------------------------------------

  private lastConnected: ConnectedInfo | null = null;

  /** One connection attempt: discovery, then the socket. */
  private async open(): Promise<void> {
    let endpoint: string;
    try {
      const body = await this.signedGet("/iapi/websocket/end_point");
      endpoint = String(body.end_point);
    } catch (error) {
      this.attemptFailed(error);
      return;
    }
    if (this.state !== "connecting" && this.state !== "reconnecting") return;
    let socket: WebSocketLike;
    try {
      const query = await this.signer.query(
        this.clock.unixSeconds(),
        this.signer.nonce(),
        this.everConnected ? this.resumeParams() : {},
      );
      const Socket = this.options.WebSocket ?? (globalThis as any).WebSocket;
      if (!Socket) throw new Error("no WebSocket: pass `WebSocket` in the options");
      socket = new Socket(`${endpoint.replace(/\/+$/, "")}/?${query}`);
    } catch (error) {
      this.attemptFailed(error);
      return;
    }
    if (this.state !== "connecting" && this.state !== "reconnecting") {
      socket.close(CloseCode.NORMAL);
      return;
    }
    this.attach(socket);
  }

  private attach(socket: WebSocketLike): void {
    this.socket = socket;
    this.kickedReason = undefined;
    socket.onmessage = (event) => this.onMessage(event.data);
    socket.onclose = (event) => this.onSocketClosed(event.code, event.reason);
    socket.onerror = () => {
      // A close event follows; it carries what there is to know.
    };
    const timeout = this.options.connectTimeoutMs ?? 10_000;
    this.timers.connect = setTimeout(
      () => this.dropSocket(CloseCode.HEARTBEAT_TIMEOUT, `no connected frame within ${timeout} ms`),
      timeout,
    );
  }

  /** Forgets the socket (its late events are ignored) and returns it. */
  private detach(): WebSocketLike {
    const socket = this.socket!;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    socket.onopen = null;
    this.socket = null;
    this.onlineToken = null;
    return socket;
  }

  /** Gives up on the current socket as if it closed with `code`. */
  private dropSocket(code: number, reason: string): void {
    if (!this.socket) return;
    this.logger.warn(`chorus: dropping the connection: ${reason}`);
    const socket = this.detach();
    try {
      // 4000-4999 are the application's to send; 1006 may not be sent.
      socket.close(code >= 4000 ? code : CloseCode.NORMAL, reason.slice(0, 100));
    } catch {
      // A dead socket may refuse even this.
    }
    this.closed(code, reason);
  }

  private onSocketClosed(code: number, reason: string): void {
    if (!this.socket) return;
    this.detach();
    this.closed(code, reason);
  }

  /** After a socket ended: tell the app, then reconnect or stop. */
  private closed(code: number, reason: string): void {
    this.stopTimersOfConnection();
    this.failPending("disconnected", `the connection closed (${code}) before the answer`);
    const verdict = mayReconnect(code);
    const willReconnect = verdict && this.options.reconnect !== false && this.state !== "closed";
    const info: DisconnectInfo = {
      code,
      reason: reason || closeReason(code),
      mayReconnect: verdict,
      willReconnect,
    };
    if (this.kickedReason !== undefined) info.kickedReason = this.kickedReason;
    if (willReconnect) {
      this.setState("reconnecting");
      this.emit("disconnected", info);
      this.scheduleRetry();
    } else {
      this.setState("closed");
      this.emit("disconnected", info);
      this.rejectWaiters(new ChorusError(code, info.reason));
    }
  }

  /** A discovery or socket creation failed: fatal, or try again later. */
  private attemptFailed(error: unknown): void {
    if (this.state === "closed") return;
    const fatal =
      error instanceof ChorusError && (error.status === 401 || error.status === 400);
    if (fatal || this.options.reconnect === false) {
      const chorusError =
        error instanceof ChorusError ? error : new ChorusError("http", String(error));
      this.logger.warn(`chorus: not connecting: ${chorusError.message}`);
      this.setState("closed");
      this.emit("error", chorusError);
      this.rejectWaiters(chorusError);
      return;
    }
    this.logger.debug?.("chorus: connection attempt failed", error);
    this.setState(this.everConnected ? "reconnecting" : "connecting");
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    const backoff = typeof this.options.reconnect === "object" ? this.options.reconnect : {};
    const delay = backoffDelay(this.attempt, backoff);
    this.attempt += 1;
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => void this.open(), delay);
  }

  // ---- inbound frames -------------------------------------------------

  private onMessage(data: unknown): void {
    // Any frame shows the link is alive.
    clearTimeout(this.timers.pong);
    this.timers.pong = undefined;
    if (typeof data !== "string") {
      this.logger.warn("chorus: ignoring a binary frame from the server");
      return;
    }
    let frame: unknown;
    try {
      frame = JSON.parse(data);
    } catch {
      this.logger.warn(`chorus: ignoring a frame that is not JSON: ${data.slice(0, 80)}`);
      return;
    }
    if (typeof frame !== "object" || frame === null || typeof (frame as any).action !== "string") {
      this.logger.warn(`chorus: ignoring a frame without an action: ${data.slice(0, 80)}`);
      return;
    }
    this.dispatch(frame as ServerFrame);
    this.emit("frame", frame as ServerFrame);
  }

  /** The signed `resume_*` parameters of a reconnection. */
  private resumeParams(): Record<string, string> {
    const params: Record<string, string> = {};
    const { room, user } = this.positions;
    if (room) {
      params.resume_channel = room.channelName;
      params.resume_epoch = room.epoch;
      params.resume_seq = String(room.seq);
    }
    if (user) {
      params.resume_user_epoch = user.epoch;
      params.resume_user_seq = String(user.seq);
    }
    return room || user ? params : {};
  }

  /**
   * Moves the stream positions on with a stamped frame; false when the
   * frame is one this client already has: a room frame at or below the
   * `seq` of the last `room_state` or `resumed` (already in the snapshot or
   * the replay), or a user frame at or below the user stream's `seq`.
   * Above that floor every frame is handed over, and the position keeps
   * the highest `seq` seen (with several nodes, frames of one room sent
   * by different nodes may arrive out of `seq` order). A frame's `stream`
   * (`"room"` or `"user"`) says which position it moves.
   */
  private advance(frame: ServerFrame): boolean {
    const epoch = frame.epoch;
    const seq = frame.seq;
    if (typeof epoch !== "string" || typeof seq !== "number") return true;
    const { room, user } = this.positions;
    // The server names the stream of every stamped frame (`stream`); the
    // guess below is only for a server that predates the field.
    const toUser =
      frame.stream === "user" ||
      (frame.stream === undefined &&
        (user?.epoch === epoch ||
          (room?.epoch !== epoch &&
            (frame.action === "hang_up" || (frame.action === "send_gift" && frame.notify_type === "ptp")))));
    if (toUser) {
      if (user?.epoch === epoch && seq <= user.seq) return false;
      this.positions.user = { epoch, seq };
      return true;
    }
    const channelName = String(frame.channel_name ?? room?.channelName ?? this.room?.channelName ?? "");
    if (this.roomFloor && this.roomFloor.epoch === epoch && seq <= this.roomFloor.seq) return false;
    if (room?.epoch === epoch && seq <= room.seq) return true;
    this.positions.room = { channelName, epoch, seq };
    return true;
  }

  private dispatch(frame: ServerFrame): void {
    switch (frame.action) {
      case "room_state": {
        const state = frame as unknown as RoomState;
        this.positions.room = { channelName: state.channel_name, epoch: state.epoch, seq: state.seq };
        this.roomFloor = { epoch: state.epoch, seq: state.seq };
        this.emit("roomState", state);
        return;
      }
      case "resumed": {
        if (typeof frame.epoch === "string" && typeof frame.seq === "number" && frame.channel_name) {
          this.positions.room = { channelName: String(frame.channel_name), epoch: frame.epoch, seq: frame.seq };
          this.roomFloor = { epoch: frame.epoch, seq: frame.seq };
        } else if (!frame.channel_name) {
          this.positions.room = null;
        }
        if (typeof frame.user_epoch === "string" && typeof frame.user_seq === "number") {
          this.positions.user = { epoch: frame.user_epoch, seq: frame.user_seq };
        }
        this.emit("resumed", { recovered: frame.recovered === true, positions: this.positions });
        return;
      }
      case "room_attributes":
        if (this.advance(frame)) this.emit("roomAttributes", frame as any);
        return;
      case "connected":
        return this.onConnected(frame);
      case "pong":
        if (typeof frame.server_time === "number") this.clock.observe(frame.server_time);
        return;
      case "ack":
        return this.onAck(frame);
      case "error":
        return this.onError(frame);
      case "kicked":
        this.kickedReason = String(frame.reason ?? "");
        this.emit("kicked", { reason: this.kickedReason });
        return;
      default:
        if (!this.advance(frame)) return;
        if ((NOTIFICATION_ACTIONS as readonly string[]).includes(frame.action)) {
          this.onNotification(frame as unknown as Notification);
        }
        this.emit("notification", frame);
    }
  }

  private onConnected(frame: ServerFrame): void {
    clearTimeout(this.timers.connect);
    this.clock.observe(Number(frame.server_time));
    this.onlineToken = String(frame.online_token);
    const info: ConnectedInfo = {
      onlineToken: this.onlineToken,
      pingInterval: Number(frame.ping_interval),
      pingTimeout: Number(frame.ping_timeout),
      serverTime: Number(frame.server_time),
      userId: Number(frame.user_id),
      currentRoomId: String(frame.current_room_id ?? ""),
      channelName: String(frame.channel_name ?? ""),
      reconnected: this.everConnected,
    };
    this.startHeartbeat(info.pingInterval);
    this.attempt = 0;
    this.lastConnected = info;
    this.setState("connected");
    if (info.reconnected) {
      void this.checkRoomAfterReconnect();
    } else {
      this.room = info.currentRoomId
        ? { roomId: info.currentRoomId, channelName: info.channelName }
        : null;
    }
    this.everConnected = true;
    this.emit("connected", info);
    this.settleWaiters(info);
  }

  /** Seed 2.2: after a reconnection, ask where the user is; a room that is
   * gone means the server removed the user while it was away. */
  private async checkRoomAfterReconnect(): Promise<void> {
    const previous = this.room;
    try {
      const info = await this.refreshRoom();
      if (previous && !info.room) this.emit("removedFromRoom", { previous });
    } catch (error) {
      this.logger.warn("chorus: /iapi/user/info after reconnecting failed", error);
    }
  }

  private onAck(frame: ServerFrame): void {
    const refAction = String(frame.ref_action ?? "");
    const entry =
      this.pending.find((p) => p.nonce === frame.nonce) ??
      this.pending.find((p) => p.action === refAction);
    if (!entry) return;
    this.removePending(entry);
    entry.resolve({
      refAction,
      msgIds: Array.isArray(frame.msg_ids) ? frame.msg_ids.map(String) : [],
      result: (frame.result ?? {}) as Record<string, unknown>,
    });
  }

  /** An error frame answers the oldest pending action of its `ref_action`
   * (the server answers a connection's frames in order; errors carry no
   * nonce). Errors of pings and reports go to the `error` event. */
  private onError(frame: ServerFrame): void {
    const refAction = String(frame.ref_action ?? "");
    const error = new ChorusError(Number(frame.error_code), String(frame.error_reason ?? ""), {
      refAction,
    });
    const entry = this.pending.find((p) => p.action === refAction);
    if (!entry) {
      this.logger.warn(`chorus: ${error.message}`);
      this.emit("error", error);
      return;
    }
    this.removePending(entry);
    entry.reject(error);
  }

  private onNotification(notification: Notification): void {
    this.trackOwnRoom(notification);
    this.emit(notification.action, notification as any);
    if (notification.relay === true) void this.relayDuty(notification);
  }

  /** Keeps {@link room} current from this user's own enter and exit. */
  private trackOwnRoom(n: Notification): void {
    const me = Number(this.options.userId);
    if (n.action === "exit_room" && n.user_id === me && this.room?.channelName === n.channel_name) {
      this.room = null;
      this.positions.room = null;
    }
  }

  /** Seed 2.4: pass the notification on, then report, in that order. */
  private async relayDuty(notification: Notification): Promise<void> {
    const report = reportFor(notification as any);
    if (!report) return;
    const hook = this.options.relay;
    if (!hook) {
      if (!this.warnedNoRelayHook) {
        this.logger.warn("chorus: chosen to relay a notification but no `relay` hook is set; not reporting");
        this.warnedNoRelayHook = true;
      }
      return;
    }
    try {
      await hook(notification);
    } catch (error) {
      this.logger.warn(`chorus: the relay hook failed for ${notification.msg_id}; not reporting`, error);
      return;
    }
    try {
      await this.sendFrame({ ...report, msg_id: notification.msg_id });
    } catch (error) {
      this.logger.warn(`chorus: could not report ${notification.msg_id}`, error);
    }
  }

  // ---- outbound -------------------------------------------------------

  /** Signs and sends a frame on the current connection. */
  private async sendFrame(fields: Frame): Promise<void> {
    const socket = this.socket;
    const token = this.onlineToken;
    if (!socket || token === null || this.state !== "connected") {
      throw new ChorusError("not_connected", "not connected", { refAction: String(fields.action) });
    }
    const frame = await this.signer.frame(fields, token, this.clock.unixSeconds());
    if (this.socket !== socket || socket.readyState !== OPEN) {
      throw new ChorusError("not_connected", "the connection closed while signing", {
        refAction: String(fields.action),
      });
    }
    socket.send(frameToJson(frame));
  }

  private startHeartbeat(intervalS: number): void {
    const intervalMs = Math.max(1, intervalS) * 1000;
    this.pongTimeoutMs = this.options.pongTimeoutMs ?? Math.max(2000, intervalMs);
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => this.ping(), intervalMs);
  }

  private ping(): void {
    if (this.timers.pong === undefined) {
      this.timers.pong = setTimeout(
        () => this.dropSocket(CloseCode.HEARTBEAT_TIMEOUT, `no pong within ${this.pongTimeoutMs} ms`),
        this.pongTimeoutMs,
      );
    }
    this.sendFrame({ action: "ping" }).catch((error: unknown) =>
      this.logger.debug?.("chorus: ping not sent", error),
    );
  }

  /** A signed GET of `/iapi/…` with the public parameters. A stale
   * timestamp (1004) is retried once with the clock set from the HTTP
   * `Date` header: the device's clock may be off before any frame came. */
  private async signedGet(path: string, retried = false): Promise<Record<string, any>> {
    const doFetch = this.options.fetch ?? globalThis.fetch;
    const query = await this.signer.query(this.clock.unixSeconds());
    const url = `${this.options.baseUrl.replace(/\/+$/, "")}${path}?${query}`;
    let response: Response;
    try {
      const timeout = this.options.httpTimeoutMs ?? 10_000;
      response = await doFetch(url, { signal: AbortSignal.timeout(timeout) });
    } catch (error) {
      throw new ChorusError("http", `${path}: ${String(error)}`);
    }
    let body: Record<string, any> = {};
    try {
      body = (await response.json()) as Record<string, any>;
    } catch {
      // Not JSON (a proxy's error page): the status says enough.
    }
    if (response.ok && body.error_code === 0) return body;
    const code = typeof body.error_code === "number" ? body.error_code : "http";
    const date = response.headers.get("date");
    if (code === 1004 && !retried && date) {
      this.clock.observe(Math.floor(Date.parse(date) / 1000));
      return this.signedGet(path, true);
    }
    throw new ChorusError(code, String(body.error_reason ?? response.statusText), {
      status: response.status,
    });
  }

  // ---- bookkeeping ----------------------------------------------------

  private setState(state: ConnectionState): void {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.emit("state", { state, previous });
  }

  private removePending(entry: Pending): void {
    clearTimeout(entry.timer);
    this.pending = this.pending.filter((p) => p !== entry);
  }

  private failPending(code: "disconnected", reason: string): void {
    const pending = this.pending;
    this.pending = [];
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(new ChorusError(code, reason, { refAction: entry.action }));
    }
  }

  private settleWaiters(info: ConnectedInfo): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve(info);
  }

  private rejectWaiters(error: Error): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(error);
  }

  private stopTimersOfConnection(): void {
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    clearTimeout(this.timers.connect);
    this.timers.ping = this.timers.pong = this.timers.connect = undefined;
  }

  private clearTimers(): void {
    this.stopTimersOfConnection();
    clearTimeout(this.timers.retry);
    this.timers.retry = undefined;
  }
}
