//! The `seat_invite` plugin (contract 1.1): a room's owner or an admin
//! invites a member to a seat, which is held for the invitee until it
//! answers, the invitation expires, or either side disconnects.
//!
//! Actions (from clients, the acting user being the connection's; from the
//! app backend with `user_id`):
//! - `invite_to_seat` (`channel_name`, `receiver_id`, optional `seat_id`):
//!   the inviter must be the room's owner or an admin (room attributes
//!   `owner`, `admins`; else not-allowed), the invitee a member of the room
//!   (else not-allowed), not seated and without a pending invitation (else
//!   conflict), and not the inviter (else rejected). The seat is `seat_id`
//!   (1..N, else rejected) or the lowest free one; it must be free (else
//!   conflict). The seat is then **held**: locked (status 2), so no `up`
//!   takes it, and the invitee gets `seat_invite`. A timer (`invite_timeout`
//!   seconds in `seat_invite.toml`, default 30) expires the invitation.
//! - `accept_seat_invite` (optional `channel_name`): the invitee takes the
//!   held seat (unlocked and taken in one batch); the room gets the seed's
//!   `up` with the invitee's profile by `up`'s rule: the app backend's
//!   stored fields win over the optional `nickname`, `sex`, `avatar_url`,
//!   `avatar_small_url` the frame sends (README "Profiles from the app
//!   backend"); a seated invitee moves, with
//!   `down` first. No pending invitation, or the invitee no longer in the
//!   room: not-allowed; the seat taken meanwhile: conflict.
//! - `decline_seat_invite`: the seat is released and the inviter gets
//!   `seat_invite_declined`.
//! - the timer (system event `timer`): the seat is released and both get
//!   `seat_invite_expired` with `reason` `timeout`.
//! - `disconnected` (system): an invitee's pending invitation is closed
//!   and its inviter gets `seat_invite_expired` (`receiver_disconnected`);
//!   every invitation a disconnected inviter sent is closed and its
//!   invitee gets `seat_invite_expired` (`inviter_disconnected`). Either
//!   way the seat is released.
//!
//! State, in the plugin's KV: `invite:<receiver>` the pending invitation
//! as JSON (an empty value, kept a minute, marks one closed), and
//! `sent:<inviter>` the invitees of an inviter's pending invitations, and
//! `hold:<channel>:<seat>` the invitee a seat is held for (deleted when the
//! invitation closes; it expires with the invitation's record).
//! Every write names the version it read, so an answer and an expiry that
//! race (on one node or several) cannot both win: the later batch is stale
//! and re-run on fresh state, where the invitation is closed. The hold is
//! written only where absent (`if-version: 0`) in the batch that locks the
//! seat, so of two invitations racing for one seat the later batch is
//! re-run, finds the seat held and picks another (or conflict); a seat
//! held is not free even if an owner unlocked it meanwhile.
//!
//! Releasing a seat unlocks it only if it is still locked and empty (an
//! owner may have unlocked or given it away meanwhile).

use chorus_plugin_sdk::Source::{Client, Server, System};
use chorus_plugin_sdk::event::{TIMER, acting, event_user, timer_event};
use chorus_plugin_sdk::notifications as seats;
use chorus_plugin_sdk::reply::{cancel_timer, notify_room, notify_user, reply, set_timer};
use chorus_plugin_sdk::roles::Roles;
use chorus_plugin_sdk::{
    ChannelName, Config, Effect, Error, Event, KvPut, Payload, Profile, Reply, Router, Seat,
    SetSeat, TakeSeat, kv, payload, profile, room_state,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Seat status: free.
const FREE: u8 = 0;
/// Seat status: locked, which is how a held seat looks.
const LOCKED: u8 = 2;
/// The default of config key `invite_timeout`, in seconds.
const DEFAULT_TIMEOUT_S: i64 = 30;
/// How long a closed invitation's marker and a pending one's record
/// outlive the invitation, in milliseconds.
const KEEP_MS: u64 = 60_000;

/// The plugin's actions.
fn router() -> Router {
    Router::new("seat_invite", env!("CARGO_PKG_VERSION"))
        .action("invite_to_seat", &[Client, Server], invite)
        .action("accept_seat_invite", &[Client, Server], accept)
        .action("decline_seat_invite", &[Client, Server], decline)
        .action(TIMER, &[System], expire)
        .action("disconnected", &[System], disconnected)
}

chorus_plugin_sdk::plugin!(Component, router());

/// A pending invitation, as read from `invite:<receiver>`.
#[derive(Debug, Clone)]
struct Pending {
    receiver: u64,
    inviter: u64,
    channel_name: String,
    seat_id: u32,
    /// The record's KV version, named by every write that closes it.
    version: u64,
}

impl Pending {
    /// The pending invitation of `receiver`, if any; with the version of
    /// its key (0 when absent), which a new invitation must name.
    fn of(receiver: u64) -> (Option<Self>, u64) {
        let Some(entry) = kv::entry(&invite_key(receiver)) else {
            return (None, 0);
        };
        let read = || -> Option<Self> {
            let record: Value = serde_json::from_str(&entry.value).ok()?;
            Some(Self {
                receiver,
                inviter: record["user_id"].as_u64()?,
                channel_name: record["channel_name"].as_str()?.to_string(),
                seat_id: u32::try_from(record["seat_id"].as_u64()?).ok()?,
                version: entry.version,
            })
        };
        (read(), entry.version)
    }

    /// The notification body shared by the invitation's notifications.
    fn body(&self, action: &str) -> Value {
        json!({
            "action": action,
            "channel_name": self.channel_name,
            "user_id": self.inviter,
            "receiver_id": self.receiver,
            "seat_id": self.seat_id,
        })
    }

    /// `seat_invite_expired` with its `reason`.
    fn expired(&self, reason: &str) -> Value {
        let mut body = self.body("seat_invite_expired");
        body["reason"] = reason.into();
        body
    }

    /// Closes the invitation: marks its record closed (on the version
    /// read, so a racing answer or expiry is re-run) and cancels its timer.
    fn close(&self) -> Vec<Effect> {
        vec![
            Effect::KvPut(KvPut {
                key: invite_key(self.receiver),
                value: String::new(),
                if_version: Some(self.version),
                ttl_ms: Some(KEEP_MS),
            }),
            cancel_timer(&invite_key(self.receiver)),
        ]
        .into_iter()
        .chain(self.unhold())
        .collect()
    }

    /// Deletes the seat's hold key if this invitation holds it.
    fn unhold(&self) -> Option<Effect> {
        let key = hold_key(&self.channel_name, self.seat_id);
        let entry = kv::entry(&key)?;
        (entry.value == self.receiver.to_string()).then_some(Effect::KvDelete(key))
    }

    /// Unlocks the held seat if it is still locked and empty.
    fn release(&self) -> Option<Effect> {
        let seats = room_state::room_seats(&self.channel_name);
        let seat = seats.iter().find(|s| s.id == self.seat_id)?;
        let held = seat.status == LOCKED && seat.user_id.is_none();
        // A room nobody is in any more has no seats to release.
        let occupied = !room_state::room_members(&self.channel_name).is_empty();
        (held && occupied).then(|| set_seat(&self.channel_name, self.seat_id, FREE))
    }
}

/// The KV key of `receiver`'s invitation (also its timer's key).
fn invite_key(receiver: u64) -> String {
    format!("invite:{receiver}")
}

/// The KV key that holds a seat for one invitation (its value: the
/// invitee). Written only where absent (`if-version: 0`) in the batch that
/// locks the seat, so of two invitations racing for a seat, on one node or
/// several, one batch is refused as stale and re-run on fresh state, where
/// the seat is held.
fn hold_key(channel_name: &str, seat_id: u32) -> String {
    format!("hold:{channel_name}:{seat_id}")
}

/// The KV key listing the invitees of `inviter`'s pending invitations.
fn sent_key(inviter: u64) -> String {
    format!("sent:{inviter}")
}

/// The invitees of `inviter`'s pending invitations and the key's version.
fn sent_by(inviter: u64) -> (Vec<u64>, u64) {
    match kv::entry(&sent_key(inviter)) {
        Some(entry) => (
            serde_json::from_str(&entry.value).unwrap_or_default(),
            entry.version,
        ),
        None => (Vec::new(), 0),
    }
}

/// Writes `inviter`'s list of invitees on the version read.
fn write_sent(inviter: u64, receivers: &[u64], version: u64, ttl_ms: u64) -> Effect {
    Effect::KvPut(KvPut {
        key: sent_key(inviter),
        value: json!(receivers).to_string(),
        if_version: Some(version),
        ttl_ms: Some(ttl_ms),
    })
}

/// Removes `receiver` from its inviter's list.
fn unlist(pending: &Pending) -> Effect {
    let (mut receivers, version) = sent_by(pending.inviter);
    receivers.retain(|r| *r != pending.receiver);
    write_sent(
        pending.inviter,
        &receivers,
        version,
        timeout_ms().saturating_add(KEEP_MS),
    )
}

fn set_seat(channel_name: &str, seat_id: u32, status: u8) -> Effect {
    Effect::SetSeat(SetSeat {
        channel_name: channel_name.to_string(),
        seat_id,
        status,
        microphone: 0,
    })
}

/// `invite_timeout` (seconds, 1..=86400) in milliseconds.
fn timeout_ms() -> u64 {
    let seconds = Config::load().i64_in("invite_timeout", 1..=86400, DEFAULT_TIMEOUT_S);
    u64::try_from(seconds).unwrap_or(30) * 1000
}

/// `invite_to_seat`'s payload: `user_id` (the inviter) from the app
/// backend only; without `seat_id` the lowest free seat.
#[derive(Deserialize)]
struct Invite {
    user_id: Option<u64>,
    channel_name: ChannelName,
    receiver_id: u64,
    seat_id: Option<u64>,
}

/// The payload of `accept_seat_invite` and `decline_seat_invite`: a
/// `channel_name`, when given, must be the invitation's room.
#[derive(Deserialize)]
struct Answer {
    user_id: Option<u64>,
    channel_name: Option<String>,
}

/// `invite_to_seat`: see the module docs.
fn invite(event: &Event) -> Result<Reply, Error> {
    let request: Invite = payload::parse(&event.payload)?;
    let inviter = acting(event, request.user_id)?;
    let channel_name = String::from(request.channel_name);
    let receiver = request.receiver_id;
    let requested = request.seat_id;
    if receiver == inviter {
        return Err(Error::Rejected("a user cannot invite themselves".into()));
    }
    if !Roles::of(&channel_name).manages(inviter) {
        return Err(Error::NotAllowed(format!(
            "user {inviter} is neither the owner nor an admin of `{channel_name}`"
        )));
    }
    let membership = room_state::membership_of(receiver)
        .filter(|m| m.channel_name == channel_name)
        .ok_or_else(|| Error::NotAllowed(format!("user {receiver} is not in `{channel_name}`")))?;
    if membership.seat_id.is_some() {
        return Err(Error::Conflict(format!(
            "user {receiver} is already seated"
        )));
    }
    let (pending, version) = Pending::of(receiver);
    if pending.is_some() {
        return Err(Error::Conflict(format!(
            "user {receiver} already has a pending seat invite"
        )));
    }
    let held = |seat: u32| kv::entry(&hold_key(&channel_name, seat)).is_some();
    let seat_id = choose_seat(&room_state::room_seats(&channel_name), requested, &held)?;
    let timeout = timeout_ms();
    let invitation = Pending {
        receiver,
        inviter,
        channel_name: channel_name.clone(),
        seat_id,
        version,
    };
    let (mut receivers, sent_version) = sent_by(inviter);
    receivers.push(receiver);
    let mut notice = invitation.body("seat_invite");
    notice["expire_time"] = (timeout / 1000).into();
    let record = json!({"user_id": inviter, "channel_name": channel_name, "seat_id": seat_id});
    let effects = vec![
        set_seat(&channel_name, seat_id, LOCKED),
        Effect::KvPut(KvPut {
            key: hold_key(&channel_name, seat_id),
            value: receiver.to_string(),
            if_version: Some(0),
            ttl_ms: Some(timeout.saturating_add(KEEP_MS)),
        }),
        Effect::KvPut(KvPut {
            key: invite_key(receiver),
            value: record.to_string(),
            if_version: Some(version),
            ttl_ms: Some(timeout.saturating_add(KEEP_MS)),
        }),
        write_sent(
            inviter,
            &receivers,
            sent_version,
            timeout.saturating_add(KEEP_MS),
        ),
        set_timer(
            &invite_key(receiver),
            i64::try_from(timeout).unwrap_or(30_000),
            &json!({"receiver_id": receiver}),
            Some(&channel_name),
        ),
        notify_user(receiver, &notice, Some(inviter)),
    ];
    let result = json!({
        "channel_name": channel_name, "receiver_id": receiver,
        "seat_id": seat_id, "expire_time": timeout / 1000,
    });
    Ok(reply(result, effects))
}

/// The seat to hold: `requested` (1..N) if free, else the lowest free one;
/// a seat another invitation holds (`held`) is not free.
fn choose_seat(
    seats: &[Seat],
    requested: Option<u64>,
    held: &dyn Fn(u32) -> bool,
) -> Result<u32, Error> {
    let is_free = |seat: &&Seat| seat.status == FREE && seat.user_id.is_none() && !held(seat.id);
    let Some(requested) = requested else {
        return seats
            .iter()
            .find(is_free)
            .map(|seat| seat.id)
            .ok_or_else(|| Error::Conflict("no seat is free".into()));
    };
    let seat = seats
        .iter()
        .find(|seat| u64::from(seat.id) == requested)
        .ok_or_else(|| {
            Error::Rejected(format!(
                "seat {requested} does not exist: the room has seats 1 to {}",
                seats.len()
            ))
        })?;
    if !is_free(&seat) {
        return Err(Error::Conflict(format!("seat {} is not free", seat.id)));
    }
    Ok(seat.id)
}

/// The acting user's pending invitation, which must be in `channel_name`
/// when the payload names one.
fn own_pending(event: &Event, payload: &Payload) -> Result<Pending, Error> {
    let request: Answer = payload.to()?;
    let user = acting(event, request.user_id)?;
    let pending = Pending::of(user)
        .0
        .ok_or_else(|| Error::NotAllowed(format!("user {user} has no pending seat invite")))?;
    if let Some(named) = request.channel_name
        && named != pending.channel_name
    {
        return Err(Error::NotAllowed(format!(
            "user {user} has no pending seat invite in `{named}`"
        )));
    }
    Ok(pending)
}

/// `accept_seat_invite`: take the held seat.
fn accept(event: &Event) -> Result<Reply, Error> {
    let payload = Payload::parse(&event.payload)?;
    let pending = own_pending(event, &payload)?;
    let user = pending.receiver;
    let channel_name = &pending.channel_name;
    let membership = room_state::membership_of(user)
        .filter(|m| m.channel_name == *channel_name)
        .ok_or_else(|| {
            Error::NotAllowed(format!("user {user} is no longer in `{channel_name}`"))
        })?;
    let seats = room_state::room_seats(channel_name);
    let seat = seats
        .iter()
        .find(|s| s.id == pending.seat_id)
        .ok_or_else(|| Error::Conflict(format!("seat {} is gone", pending.seat_id)))?;
    if seat.user_id.is_some() {
        return Err(Error::Conflict(format!("seat {} was taken", seat.id)));
    }
    let shown = Profile::optional(&profile::with_stored(event, &payload, user))?;
    let mut effects = pending.close();
    effects.push(unlist(&pending));
    if seat.status == LOCKED {
        effects.push(set_seat(channel_name, seat.id, FREE));
    }
    if let Some(old) = membership.seat_id {
        let down = seats::down(user, &membership, old);
        effects.push(notify_room(channel_name, &down, Some(user)));
    }
    effects.push(Effect::TakeSeat(TakeSeat {
        channel_name: channel_name.clone(),
        seat_id: seat.id,
        user_id: user,
    }));
    let up = seats::up(user, &membership, seat.id, &shown);
    effects.push(notify_room(channel_name, &up, Some(user)));
    let result = json!({"channel_name": channel_name, "seat_id": seat.id});
    Ok(reply(result, effects))
}

/// `decline_seat_invite`: release the seat and tell the inviter.
fn decline(event: &Event) -> Result<Reply, Error> {
    let payload = Payload::parse(&event.payload)?;
    let pending = own_pending(event, &payload)?;
    let mut effects = pending.close();
    effects.push(unlist(&pending));
    effects.extend(pending.release());
    let declined = pending.body("seat_invite_declined");
    effects.push(notify_user(
        pending.inviter,
        &declined,
        Some(pending.receiver),
    ));
    let result = json!({"channel_name": pending.channel_name, "seat_id": pending.seat_id});
    Ok(reply(result, effects))
}

/// The invitation's timer: it expired unanswered.
fn expire(event: &Event) -> Result<Reply, Error> {
    let timer = timer_event(event)?;
    let receiver = timer.payload["receiver_id"].as_u64().unwrap_or_default();
    let Some(pending) = Pending::of(receiver).0 else {
        return Ok(reply(json!({"expired": false}), Vec::new()));
    };
    let mut effects = pending.close();
    effects.push(unlist(&pending));
    effects.extend(pending.release());
    let expired = pending.expired("timeout");
    effects.push(notify_user(pending.inviter, &expired, Some(receiver)));
    effects.push(notify_user(receiver, &expired, Some(receiver)));
    Ok(reply(json!({"expired": true}), effects))
}

/// `disconnected`: close what the user was invited to and what it sent.
fn disconnected(event: &Event) -> Result<Reply, Error> {
    let user = event_user(event)?;
    let mut effects = Vec::new();
    let mut closed = 0;
    if let Some(pending) = Pending::of(user).0 {
        effects.extend(pending.close());
        effects.push(unlist(&pending));
        effects.extend(pending.release());
        let expired = pending.expired("receiver_disconnected");
        effects.push(notify_user(pending.inviter, &expired, Some(user)));
        closed += 1;
    }
    let (receivers, version) = sent_by(user);
    for receiver in &receivers {
        let Some(pending) = Pending::of(*receiver).0.filter(|p| p.inviter == user) else {
            continue;
        };
        effects.extend(pending.close());
        effects.extend(pending.release());
        let expired = pending.expired("inviter_disconnected");
        effects.push(notify_user(pending.receiver, &expired, Some(user)));
        closed += 1;
    }
    if !receivers.is_empty() {
        effects.push(write_sent(user, &[], version, KEEP_MS));
    }
    Ok(reply(json!({"closed": closed}), effects))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats(states: &[(u8, Option<u64>)]) -> Vec<Seat> {
        (1..)
            .zip(states)
            .map(|(id, &(status, user_id))| Seat {
                id,
                user_id,
                status,
                microphone: 0,
            })
            .collect()
    }

    #[test]
    fn holds_the_requested_or_the_lowest_free_seat() {
        let none = |_: u32| false;
        let room = seats(&[(1, Some(7)), (LOCKED, None), (FREE, None)]);
        assert_eq!(choose_seat(&room, None, &none).ok(), Some(3));
        assert_eq!(choose_seat(&room, Some(3), &none).ok(), Some(3));
        assert!(matches!(
            choose_seat(&room, Some(1), &none),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            choose_seat(&room, Some(2), &none),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            choose_seat(&room, Some(4), &none),
            Err(Error::Rejected(_))
        ));
        let full = seats(&[(1, Some(7)), (LOCKED, None)]);
        assert!(matches!(
            choose_seat(&full, None, &none),
            Err(Error::Conflict(_))
        ));
        // A free seat held by another invitation (an owner unlocked it) is
        // not free.
        let unlocked = seats(&[(FREE, None), (FREE, None)]);
        let first_held = |seat: u32| seat == 1;
        assert_eq!(choose_seat(&unlocked, None, &first_held).ok(), Some(2));
        assert!(matches!(
            choose_seat(&unlocked, Some(1), &first_held),
            Err(Error::Conflict(_))
        ));
    }
}

/// The plugin's rules run on the SDK's fake host.
#[cfg(test)]
mod harness {
    use super::*;
    use chorus_plugin_sdk::Target;
    use chorus_plugin_sdk::testing::FakeHost;

    fn room() -> FakeHost {
        FakeHost::new()
            .member(1, "r1", 88)
            .member(2, "r1", 88)
            .member(3, "r1", 88)
            .attribute("r1", "owner", "1")
            .config(json!({"invite_timeout": 10}))
    }

    fn invite(host: &mut FakeHost, seat: Option<u32>) -> chorus_plugin_sdk::testing::Handled {
        host.client::<Component>(
            1,
            "invite_to_seat",
            json!({"channel_name": "r1", "receiver_id": 2, "seat_id": seat}),
        )
    }

    #[test]
    fn an_accepted_invitation_seats_the_invitee_with_up() {
        let mut host = room();
        let sent = invite(&mut host, Some(4));
        assert_eq!(sent.notifications()[0].target, Target::User(2));
        assert_eq!(sent.bodies()[0]["action"], "seat_invite");
        assert_eq!(host.seats("r1")[3].status, LOCKED);
        assert!(host.timers().contains_key("invite:2"));
        let accepted = host.client::<Component>(2, "accept_seat_invite", json!({}));
        let up = &accepted.bodies()[0];
        assert_eq!(up["action"], "up");
        assert_eq!(up["room_seat"]["id"], 4);
        assert_eq!(host.seat_of(2), Some(4));
        assert!(host.timers().is_empty());
    }

    #[test]
    fn an_unanswered_invitation_expires_when_its_timer_fires() {
        let mut host = room();
        invite(&mut host, None);
        assert!(host.advance::<Component>(9_000).is_empty());
        let fired = host.advance::<Component>(1_000);
        assert_eq!(fired.len(), 1);
        let bodies = fired[0].bodies();
        assert!(bodies.iter().all(|b| b["action"] == "seat_invite_expired"));
        assert!(bodies.iter().all(|b| b["reason"] == "timeout"));
        assert_eq!(host.seats("r1")[0].status, FREE);
        assert_eq!(
            host.client::<Component>(2, "accept_seat_invite", json!({}))
                .code(),
            2004
        );
    }

    #[test]
    fn only_a_manager_invites_a_member_once() {
        let mut host = room();
        let by_member = host.client::<Component>(
            3,
            "invite_to_seat",
            json!({"channel_name": "r1", "receiver_id": 2}),
        );
        assert_eq!(by_member.code(), 2004);
        invite(&mut host, None);
        assert_eq!(invite(&mut host, None).code(), 2003);
        let declined = host.client::<Component>(2, "decline_seat_invite", json!({}));
        assert_eq!(declined.notifications()[0].target, Target::User(1));
        assert_eq!(declined.bodies()[0]["action"], "seat_invite_declined");
    }
}
