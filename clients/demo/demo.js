// The demo room's page script: everything it does with Chorus goes through
// the SDK (./sdk/ is clients/js compiled by host/build.rs). The /demo/api
// routes stand in for an app backend: credentials, and the server-only
// actions (enter_room, exit_room, up, down, room_notice).
import { ChorusClient } from "./sdk/index.js";

const $ = (id) => document.getElementById(id);

/** Who this tab is, once logged in. */
const session = { me: 0, nick: "", channel: "", sid: "", car: false };
/** The connection; one per tab. */
let client = null;
/** The stand-in for the voice provider's signaling between tabs. */
let rtc = null;
/** Nicknames learnt from notifications. */
const names = new Map();
/** The room as last fetched, re-rendered when a nickname is learnt. */
let lastRoom = null;
/** Notifications already shown, by msg_id (relays arrive more than once). */
const seen = new Set();

async function api(path, body) {
  const response = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${json.error_code ?? response.status}: ${json.error_reason ?? response.statusText}`);
  }
  return json;
}

/** A server-only action, run by the dev server for this tab's user. */
function demoAction(action, fields = {}) {
  return api("/demo/api/actions", { user_id: session.me, sid: session.sid, action, ...fields });
}

function profile() {
  return { nickname: session.nick, sex: 0, avatar_url: "", avatar_small_url: "" };
}

function nameOf(userId) {
  if (userId === session.me) return `${session.nick} (you)`;
  return names.get(userId) || `user ${userId}`;
}

// ---- rendering -----------------------------------------------------------

function logEvent(action, text) {
  const li = document.createElement("li");
  li.dataset.action = action;
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("events").append(li);
  $("events").scrollTop = $("events").scrollHeight;
}

function chatLine(text, className = "") {
  const li = document.createElement("li");
  li.className = className;
  li.textContent = text;
  $("chat-log").append(li);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
}

function flash(element, text, seconds) {
  element.textContent = text;
  element.hidden = false;
  clearTimeout(element.hideTimer);
  element.hideTimer = setTimeout(() => (element.hidden = true), seconds * 1000);
}

function setStatus(state) {
  $("status").dataset.state = state;
  $("status").textContent = state;
}

async function refreshSeats() {
  if (!session.channel) return;
  try {
    lastRoom = await api(`/demo/api/rooms/${encodeURIComponent(session.channel)}`);
  } catch (error) {
    logEvent("error", `room state: ${error.message}`);
    return;
  }
  renderRoom(lastRoom);
}

/** Remembers a user's nickname, re-rendering names already on screen. */
function learnName(userId, nickname) {
  if (!nickname || names.get(userId) === nickname) return;
  names.set(userId, nickname);
  if (lastRoom) renderRoom(lastRoom);
}

function renderRoom(room) {
  const seats = $("seats");
  seats.replaceChildren();
  for (const seat of room.seats) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "seat";
    button.dataset.seatId = seat.id;
    if (seat.user_id != null) {
      button.dataset.userId = seat.user_id;
      button.textContent = `${seat.id}: ${nameOf(seat.user_id)}`;
      if (seat.user_id === session.me) {
        button.classList.add("mine");
        button.title = "leave this seat";
        button.onclick = () => leaveSeat();
      } else {
        button.disabled = true;
      }
    } else {
      button.textContent = seat.status === 2 ? `${seat.id}: locked` : `${seat.id}: free`;
      button.disabled = seat.status === 2;
      button.onclick = () => takeSeat(seat.id);
    }
    seats.append(button);
  }
  const select = $("gift-to");
  const chosen = select.value;
  select.replaceChildren();
  for (const member of room.members) {
    const option = document.createElement("option");
    option.value = member;
    option.textContent = nameOf(member);
    select.append(option);
  }
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  else if (select.options.length > 1) select.selectedIndex = room.members[0] === session.me ? 1 : 0;
}

// ---- notifications ---------------------------------------------------------

/** Shows a notification once, whether it came from the server or a relay. */
function show(n) {
  if (!n || typeof n.action !== "string" || seen.has(n.msg_id)) return;
  seen.add(n.msg_id);
  if (n.channel_name && n.channel_name !== session.channel) return;
  switch (n.action) {
    case "enter_room":
      learnName(n.user_id, n.nickname);
      logEvent("enter_room", `${nameOf(n.user_id)} entered the room`);
      if (n.user_car_gift) {
        const car = n.user_car_gift;
        flash($("car-show"), `Car: ${car.notice_content || `${n.nickname} arrived in ${car.name}`}`, 6);
        logEvent("car", `car shown: ${car.name}`);
      }
      break;
    case "exit_room":
      logEvent("exit_room", `${nameOf(n.user_id)} left the room`);
      break;
    case "up":
      learnName(n.room_seat.user_id, n.room_seat.nickname);
      logEvent("up", `${nameOf(n.room_seat.user_id)} took seat ${n.room_seat.id}`);
      break;
    case "down":
      logEvent("down", `${nameOf(n.user_id)} left seat ${n.room_seat.id}`);
      break;
    case "send_topic_msg":
      learnName(n.user_id, n.nickname);
      chatLine(`${nameOf(n.user_id)}: ${n.content}`);
      break;
    case "send_gift": {
      const g = n.gift;
      learnName(g.sender_id, g.sender_nickname);
      chatLine(`${nameOf(g.sender_id)} sent ${g.num} ${g.name} to ${nameOf(g.receiver_id)}`, "gift");
      break;
    }
    case "room_notice":
      flash($("notice"), `Notice: ${n.content}`, Math.max(3, n.expire_time || 10));
      logEvent("room_notice", `notice: ${n.content}`);
      break;
    case "hang_up":
      logEvent("hang_up", `${nameOf(n.user_id)} hung up`);
      break;
    default:
      return;
  }
  if (["enter_room", "exit_room", "up", "down"].includes(n.action)) void refreshSeats();
}

/** After an own action: show it here unless its notification already was. */
function acknowledged(msgIds, render) {
  if (msgIds.length > 0 && msgIds.every((id) => seen.has(id))) return;
  msgIds.forEach((id) => seen.add(id));
  render();
}

// ---- actions -----------------------------------------------------------------

async function enterRoom() {
  const fields = { channel_name: session.channel, room_id: roomIdOf(session.channel), i_segment: "newcomer", ...profile() };
  if (session.car) {
    fields.cars = [{
      name: "Red Convertible", gift_type: 2, show_rank: 10, expire_time: 0,
      image_url: "", image_small_url: "", image_big_url: "", dynamic_image_url: "",
      svga_image_name: "", render_type: "gif", svga_image_url: "", notice_content: "",
    }];
  }
  const ack = await demoAction("enter_room", fields);
  await client.refreshRoom(); // so the SDK knows the room for its seed 2.2 check
  acknowledged(ack.msg_ids, () => {
    logEvent("enter_room", `you entered ${session.channel}`);
    if (ack.result.car) flash($("car-show"), `Car: ${ack.result.car.notice_content}`, 6);
  });
  $("banner").hidden = true;
  await refreshSeats();
}

/** The app backend's numeric id of a room: here, derived from its name. */
function roomIdOf(channel) {
  let h = 7;
  for (const c of channel) h = (h * 31 + c.codePointAt(0)) % 1_000_000;
  return h + 1;
}

async function takeSeat(seatId) {
  await run(async () => {
    const ack = await demoAction("up", { channel_name: session.channel, seat_id: seatId, ...profile() });
    acknowledged(ack.msg_ids, () => logEvent("up", `you took seat ${seatId}`));
    await refreshSeats();
  });
}

async function leaveSeat() {
  await run(async () => {
    const ack = await demoAction("down", { channel_name: session.channel });
    acknowledged(ack.msg_ids, () => logEvent("down", "you left your seat"));
    await refreshSeats();
  });
}

/** Runs an action, logging a refusal (error code and reason) as an event. */
async function run(action) {
  try {
    await action();
  } catch (error) {
    logEvent("error", error.code ? `refused ${error.code}: ${error.reason}` : error.message);
  }
}

// ---- wiring ------------------------------------------------------------------

function connectClient(credentials) {
  rtc = new BroadcastChannel(`chorus-demo:${session.channel}`);
  rtc.onmessage = (event) => show(event.data);
  client = new ChorusClient({
    baseUrl: location.origin,
    userId: session.me,
    sid: credentials.sid,
    signKey: credentials.sign_key,
    // The relay duty: pass the notification to the other tabs, then the
    // SDK reports it to the server.
    relay: async (notification) => rtc.postMessage(notification),
  });
  for (const action of ["enter_room", "exit_room", "up", "down", "send_topic_msg", "send_gift", "room_notice", "hang_up"]) {
    client.on(action, show);
  }
  client.on("state", ({ state }) => setStatus(state));
  client.on("connected", (info) => {
    if (info.reconnected) logEvent("connected", "reconnected");
    void refreshSeats();
  });
  client.on("disconnected", (e) =>
    logEvent("disconnected", `connection closed: ${e.code} ${e.reason}${e.kickedReason ? ` (kicked: ${e.kickedReason})` : ""}; ${e.willReconnect ? "reconnecting…" : "not reconnecting"}`),
  );
  client.on("removedFromRoom", ({ previous }) => {
    logEvent("removed", `removed from ${previous.channelName} while away`);
    $("banner-text").textContent =
      `The server removed you from ${previous.channelName} while you were away (seed 2.2): an app leaves its voice channel here.`;
    $("banner").hidden = false;
  });
  client.on("error", (e) => logEvent("error", e.message));
  return client.connect();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("enter").disabled = true;
  $("login-error").hidden = true;
  session.me = Number($("user-id").value);
  session.nick = $("nickname").value.trim() || `user ${session.me}`;
  session.channel = $("channel").value.trim();
  session.car = $("car").checked;
  try {
    const credentials = await api("/demo/api/credentials", { user_id: session.me });
    session.sid = credentials.sid;
    await connectClient(credentials);
    await enterRoom();
    $("login").hidden = true;
    $("room").hidden = false;
    $("whoami").textContent = `${session.nick} (user ${session.me}) in ${session.channel}`;
    document.title = `${session.nick}: Chorus demo`;
  } catch (error) {
    $("login-error").textContent = `Could not enter: ${error.message}`;
    $("login-error").hidden = false;
    client?.close();
    $("enter").disabled = false;
  }
});

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = $("chat-input").value.trim();
  if (!content) return;
  $("chat-input").value = "";
  void run(async () => {
    const ack = await client.send("send_topic_msg", { channel_name: session.channel, content, nickname: session.nick });
    acknowledged(ack.msgIds, () => chatLine(`${nameOf(session.me)}: ${content}`));
  });
});

$("gift-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const receiver = Number($("gift-to").value);
  if (!receiver) return;
  void run(async () => {
    // Gifts come from the app backend (the demo plays it): a client's
    // send_gift is refused unless the operator allows it.
    const ack = await demoAction("send_gift", {
      channel_name: session.channel,
      notify_type: "bc",
      gift: {
        id: 1, receiver_id: receiver, num: 1, name: "rose",
        sender_nickname: session.nick, receiver_nickname: names.get(receiver) || "",
        image_url: "", image_small_url: "", image_big_url: "", dynamic_image_url: "",
      },
    });
    acknowledged(ack.msg_ids, () => chatLine(`${nameOf(session.me)} sent 1 rose to ${nameOf(receiver)}`, "gift"));
  });
});

$("notice-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = $("notice-input").value.trim();
  if (!content) return;
  $("notice-input").value = "";
  void run(() => demoAction("room_notice", { channel_name: session.channel, content, expire_time: 10, client_url: "" }));
});

$("leave-room").addEventListener("click", () =>
  run(async () => {
    await demoAction("exit_room", { channel_name: session.channel });
    client.close();
    location.reload();
  }),
);

$("reenter").addEventListener("click", () => run(enterRoom));

// A closing tab closes its socket; the server removes the user at once.
addEventListener("pagehide", () => client?.close());

$("user-id").value = String(1000 + Math.floor(Math.random() * 9000));
