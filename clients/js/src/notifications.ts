/**
 * The server's notifications (seed section 3.2, PROTOCOL section 6), typed.
 *
 * Every notification carries `msg_id`; one sent to this client as the
 * room's delegate also carries `relay: true` (see `ChorusOptions.relay`).
 *
 * @module
 */

/** Fields every notification has. */
export interface NotificationBase {
  /** Unique per notification: the same for every recipient of one
   * broadcast and every attempt of one relay. */
  msg_id: string;
  /** True when this client was chosen to relay the notification to the
   * room; the SDK reports it after the app's relay hook resolved. */
  relay?: boolean;
}

/** A seat as `exit_room` and `down` show it, freed. */
export interface FreedSeat {
  id: number;
  status: number;
  microphone: number;
  rank?: number;
  room_id?: number;
}

/** A user left the room (or was removed on disconnect). */
export interface ExitRoom extends NotificationBase {
  action: "exit_room";
  user_id: number;
  channel_name: string;
  /** The seat the user had, as now freed, or null. */
  room_seat: FreedSeat | null;
}

/** A 1:1 call ended. */
export interface HangUp extends NotificationBase {
  action: "hang_up";
  user_id: number;
  receiver_id: number;
  channel_name: string;
  /** `"no_answer"` when a call rang past `calls.ring_timeout` unanswered
   * (both users get one, each naming the other as `user_id`). */
  reason?: string;
}

/** A gift object (seed 3.2); `gift_type` 2 is a car. */
export interface CarGift {
  name: string;
  image_url: string;
  image_small_url: string;
  image_big_url: string;
  dynamic_image_url: string;
  svga_image_name: string;
  render_type: string;
  svga_image_url: string;
  show_rank: number;
  expire_time: number;
  gift_type: number;
  notice_content: string;
}

/** Profile fields shown with a user. */
export interface Profile {
  nickname: string;
  sex: number;
  avatar_url: string;
  avatar_small_url: string;
}

/** A user entered the room. */
export interface EnterRoom extends NotificationBase, Profile {
  action: "enter_room";
  user_id: number;
  channel_name: string;
  i_segment: string;
  i_segment_text: string;
  /** The car to show, or null. */
  user_car_gift: CarGift | null;
}

/** A message on the room's public screen. */
export interface SendTopicMsg extends NotificationBase, Profile {
  action: "send_topic_msg";
  user_id: number;
  channel_name: string;
  content: string;
}

/** A gift as notified. */
export interface Gift {
  id: number;
  sender_room_seat_id: number;
  receiver_room_seat_id: number;
  sender_id: number;
  receiver_id: number;
  sender_nickname: string;
  receiver_nickname: string;
  name: string;
  dynamic_image_url: string;
  image_url: string;
  image_big_url: string;
  image_small_url: string;
  num: number;
}

/** A gift was sent, to the room (`bc`) or to this user (`ptp`). */
export interface SendGift extends NotificationBase {
  action: "send_gift";
  notify_type: "bc" | "ptp";
  channel_name: string;
  gift: Gift;
}

/** A seat as `up` shows it, taken. */
export interface TakenSeat extends Profile {
  user_id: number;
  id: number;
  status: number;
  microphone: number;
  rank: number;
  room_id: number;
}

/** A user took a seat. */
export interface Up extends NotificationBase {
  action: "up";
  channel_name: string;
  room_seat: TakenSeat;
}

/** A user left a seat. */
export interface Down extends NotificationBase {
  action: "down";
  /** The user who left the seat (added to the seed's shape). */
  user_id: number;
  channel_name: string;
  room_seat: FreedSeat;
}

/** A notice for the room, or for everyone when `channel_name` is empty. */
export interface RoomNotice extends NotificationBase {
  action: "room_notice";
  channel_name?: string;
  /** How long to show it, seconds. */
  expire_time: number;
  content: string;
  client_url: string;
}

/** Every notification of the seed, by action. */
export interface Notifications {
  exit_room: ExitRoom;
  hang_up: HangUp;
  enter_room: EnterRoom;
  send_topic_msg: SendTopicMsg;
  send_gift: SendGift;
  up: Up;
  down: Down;
  room_notice: RoomNotice;
}

/** Any notification. */
export type Notification = Notifications[keyof Notifications];

/** The names of the seed's notifications. */
export const NOTIFICATION_ACTIONS: ReadonlyArray<keyof Notifications> = [
  "exit_room",
  "hang_up",
  "enter_room",
  "send_topic_msg",
  "send_gift",
  "up",
  "down",
  "room_notice",
];

/**
 * The report a delegate sends after relaying `notification`: the action
 * (`up_deport` for `up`, as the seed spells it) and the subject's user id.
 * Null for a notification that is never relayed (`room_notice`).
 */
export function reportFor(
  notification: { action: string } & Record<string, unknown>,
): { action: string; user_id: number } | null {
  const n = notification as Record<string, any>;
  switch (notification.action) {
    case "enter_room":
    case "exit_room":
    case "send_topic_msg":
    case "hang_up":
    case "down":
      return { action: `${notification.action}_report`, user_id: n.user_id };
    case "up":
      return { action: "up_deport", user_id: n.room_seat?.user_id };
    case "send_gift":
      return { action: "send_gift_report", user_id: n.gift?.sender_id };
    default:
      return null;
  }
}
