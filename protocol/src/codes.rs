//! Error codes and close codes, in one place as the contract lists them.
//!
//! [`ErrorCode`] is what an `error` frame or an HTTP error body carries
//! (PROTOCOL section 4), with the HTTP status each one maps to (sections 3
//! and 8). [`close`] holds the WebSocket close codes and, for each, whether
//! a client may reconnect on its own.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An error code of the protocol (PROTOCOL section 4).
///
/// Serialized as its bare number, as `error_code` is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
#[repr(u16)]
pub enum ErrorCode {
    /// 1001: not a JSON object, a binary frame, a float in a signed frame,
    /// or a field of the wrong type.
    MalformedFrame = 1001,
    /// 1002: a required field is missing.
    MissingField = 1002,
    /// 1003: bad signature or bad sid (unparseable, forged, expired or of
    /// another user).
    BadSignature = 1003,
    /// 1004: the timestamp is outside the allowed skew.
    StaleTimestamp = 1004,
    /// 1005: a replayed frame, query or server API nonce.
    Replayed = 1005,
    /// 1006: the `online_token` does not belong to this connection.
    BadOnlineToken = 1006,
    /// 1007: no loaded plugin handles this action.
    UnknownAction = 1007,
    /// 1008: rate limited.
    RateLimited = 1008,
    /// 2001: the plugin rejected the action; its reason is the error reason.
    PluginRejected = 2001,
    /// 2002: the plugin failed (trap, timeout, not loaded); nothing was
    /// applied.
    PluginFailed = 2002,
    /// 2003: conflict, for example the seat is taken.
    Conflict = 2003,
    /// 2004: not allowed, for example the user is not in that room.
    NotAllowed = 2004,
    /// 2005 (a Chorus addition, README "Errors beyond the contract"): the
    /// state store did not confirm the change in time (its answer timed
    /// out or its connection dropped after the change was sent), so the
    /// change may or may not have been applied. Unlike 2002, retrying
    /// blindly may apply it twice: read the state first.
    OutcomeUnknown = 2005,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 13] = [
        Self::MalformedFrame,
        Self::MissingField,
        Self::BadSignature,
        Self::StaleTimestamp,
        Self::Replayed,
        Self::BadOnlineToken,
        Self::UnknownAction,
        Self::RateLimited,
        Self::PluginRejected,
        Self::PluginFailed,
        Self::Conflict,
        Self::NotAllowed,
        Self::OutcomeUnknown,
    ];

    /// The number sent as `error_code`.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code with number `code`, if the protocol defines one.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.code() == code)
    }

    /// A default English `error_reason`, for when nothing more specific
    /// is known.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::MalformedFrame => "malformed frame",
            Self::MissingField => "a required field is missing",
            Self::BadSignature => "bad signature or sid",
            Self::StaleTimestamp => "stale timestamp",
            Self::Replayed => "replayed request",
            Self::BadOnlineToken => "online_token does not match this connection",
            Self::UnknownAction => "unknown action",
            Self::RateLimited => "rate limited",
            Self::PluginRejected => "the action was rejected",
            Self::PluginFailed => "the action failed; nothing was applied",
            Self::Conflict => "conflict",
            Self::NotAllowed => "not allowed",
            Self::OutcomeUnknown => {
                "the state store did not confirm the change; it may have been applied"
            }
        }
    }

    /// The HTTP status of an HTTP answer carrying this code (sections 3
    /// and 8).
    pub const fn http_status(self) -> u16 {
        match self {
            Self::MalformedFrame | Self::MissingField => 400,
            Self::BadSignature | Self::StaleTimestamp | Self::Replayed | Self::BadOnlineToken => {
                401
            }
            Self::UnknownAction => 404,
            Self::RateLimited => 429,
            Self::PluginRejected => 422,
            Self::PluginFailed => 503,
            Self::Conflict => 409,
            Self::NotAllowed => 403,
            Self::OutcomeUnknown => 504,
        }
    }

    /// True for the 1xxx range: errors of the request itself, which count
    /// toward closing a connection with [`close::TOO_MANY_BAD_FRAMES`].
    pub const fn is_protocol_error(self) -> bool {
        self.code() < 2000
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> Self {
        code.code()
    }
}

/// A number that is not one of the protocol's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a Chorus error code")]
pub struct UnknownErrorCode(pub u16);

impl TryFrom<u16> for ErrorCode {
    type Error = UnknownErrorCode;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        Self::from_code(code).ok_or(UnknownErrorCode(code))
    }
}

/// WebSocket close codes, and whether a client may reconnect after each.
///
/// As in centrifuge, every way a connection can end has a code and a
/// reconnect verdict. "May reconnect" means: reconnect on its own, with
/// backoff, using the credentials it has. A client told not to reconnect
/// needs something else first (new credentials, a fix, the user's say).
pub mod close {
    /// 1001: the server is shutting down. May reconnect: another node, or
    /// this one once restarted, will take the connection.
    pub const GOING_AWAY: u16 = 1001;

    /// 1007: a text frame that is not UTF-8 (our choice, beyond the
    /// contract). May not reconnect: the client would send it again.
    pub const INVALID_PAYLOAD: u16 = 1007;

    /// 1009: a frame exceeded `limits.max_frame_bytes`. May not reconnect:
    /// the client sent something it should never send, and reconnecting
    /// in a loop would hide that bug.
    pub const FRAME_TOO_LARGE: u16 = 1009;

    /// 4000: no valid frame within `heartbeat.ping_timeout`. May reconnect:
    /// the network or the app stalled, and a fresh connection resumes
    /// within `heartbeat.grace`.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;

    /// 4001: the session's credential is no longer valid (expired or
    /// revoked sid). May not reconnect with the same credentials: fetch a
    /// new sid from the app backend first.
    pub const AUTH_FAILED: u16 = 4001;

    /// 4008: the 20th 1xxx error within 10 seconds. May not reconnect: the
    /// client is misbehaving (or its clock is off) and would do so again.
    pub const TOO_MANY_BAD_FRAMES: u16 = 4008;

    /// 4009: a newer connection of the same user replaced this one. May
    /// not reconnect: two devices would keep replacing each other.
    pub const REPLACED: u16 = 4009;

    /// 4010: the app backend kicked the user. May not reconnect: the app
    /// backend decides when the user comes back.
    pub const KICKED: u16 = 4010;

    /// 4011: the server's bounded outbound queue for this connection was
    /// full (our choice, beyond the contract). May reconnect: the client
    /// was merely slow to read, and a new connection starts empty.
    pub const SLOW_CONSUMER: u16 = 4011;

    /// How many 1xxx errors within [`BAD_FRAME_WINDOW_SECS`] close a
    /// connection with [`TOO_MANY_BAD_FRAMES`] (the 20th closes it).
    pub const BAD_FRAME_LIMIT: u32 = 20;

    /// The sliding window, in seconds, over which [`BAD_FRAME_LIMIT`] is
    /// counted.
    pub const BAD_FRAME_WINDOW_SECS: u64 = 10;

    /// Whether a client may reconnect by itself after a close with `code`.
    ///
    /// Codes not listed above (network failures such as 1006, server
    /// errors such as 1011) are presumed transient: true.
    pub const fn may_reconnect(code: u16) -> bool {
        !matches!(
            code,
            INVALID_PAYLOAD
                | FRAME_TOO_LARGE
                | AUTH_FAILED
                | TOO_MANY_BAD_FRAMES
                | REPLACED
                | KICKED
        )
    }

    /// A short reason to send in the close frame with `code` (the empty
    /// string for a code not listed above).
    pub const fn reason(code: u16) -> &'static str {
        match code {
            GOING_AWAY => "server shutting down",
            INVALID_PAYLOAD => "invalid UTF-8",
            FRAME_TOO_LARGE => "frame too large",
            HEARTBEAT_TIMEOUT => "heartbeat timeout",
            AUTH_FAILED => "auth failed",
            TOO_MANY_BAD_FRAMES => "too many bad frames",
            REPLACED => "replaced",
            KICKED => "kicked",
            SLOW_CONSUMER => "slow consumer",
            _ => "",
        }
    }
}

/// Every way the server closes a WebSocket: the close code, its default
/// reason and whether the client may reconnect by itself (PROTOCOL section
/// 4, "Close codes"; 1007 and 4011 are this server's choices, in the
/// README).
///
/// The host names a close only through this type (or [`Disconnect`],
/// which adds a reason); the numbers live here and in [`close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1001: the server is shutting down, or this node must be left.
    GoingAway,
    /// 1007: a text frame that is not UTF-8.
    InvalidPayload,
    /// 1009: a frame exceeded `limits.max_frame_bytes`.
    FrameTooLarge,
    /// 4000: no valid frame within `heartbeat.ping_timeout`.
    HeartbeatTimeout,
    /// 4001: the session's credential is no longer valid.
    AuthFailed,
    /// 4008: the 20th 1xxx error within 10 seconds.
    TooManyBadFrames,
    /// 4009: a newer connection of the same user replaced this one.
    Replaced,
    /// 4010: the app backend kicked the user.
    Kicked,
    /// 4011: the connection's bounded outbound queue was full.
    SlowConsumer,
}

impl CloseCode {
    /// Every close code the server sends, in numeric order.
    pub const ALL: [CloseCode; 9] = [
        CloseCode::GoingAway,
        CloseCode::InvalidPayload,
        CloseCode::FrameTooLarge,
        CloseCode::HeartbeatTimeout,
        CloseCode::AuthFailed,
        CloseCode::TooManyBadFrames,
        CloseCode::Replaced,
        CloseCode::Kicked,
        CloseCode::SlowConsumer,
    ];

    /// The number sent in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => close::GOING_AWAY,
            CloseCode::InvalidPayload => close::INVALID_PAYLOAD,
            CloseCode::FrameTooLarge => close::FRAME_TOO_LARGE,
            CloseCode::HeartbeatTimeout => close::HEARTBEAT_TIMEOUT,
            CloseCode::AuthFailed => close::AUTH_FAILED,
            CloseCode::TooManyBadFrames => close::TOO_MANY_BAD_FRAMES,
            CloseCode::Replaced => close::REPLACED,
            CloseCode::Kicked => close::KICKED,
            CloseCode::SlowConsumer => close::SLOW_CONSUMER,
        }
    }

    /// The close code numbered `code`, if the server sends one.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The default reason sent in the close frame.
    pub const fn reason(self) -> &'static str {
        close::reason(self.code())
    }

    /// Whether a client may reconnect by itself after this close (see
    /// [`close::may_reconnect`]).
    pub const fn may_reconnect(self) -> bool {
        close::may_reconnect(self.code())
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

/// How a connection ends when the server ends it: a [`CloseCode`] and the
/// reason sent with it (as centrifuge's `Disconnect`). The reason is cut
/// to [`Disconnect::MAX_REASON_BYTES`] at a character boundary, so any
/// reason fits a close frame (RFC 6455 section 5.5: a control frame's
/// payload is at most 125 bytes, two of them the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The close code.
    pub code: CloseCode,
    /// The reason sent in the close frame; at most
    /// [`Disconnect::MAX_REASON_BYTES`] bytes.
    reason: Cow<'static, str>,
}

impl Disconnect {
    /// The longest reason a close frame carries, in bytes.
    pub const MAX_REASON_BYTES: usize = 123;

    /// A close with the code's default reason.
    pub const fn new(code: CloseCode) -> Self {
        Self {
            code,
            reason: Cow::Borrowed(code.reason()),
        }
    }

    /// A close with its own reason, cut to fit a close frame.
    pub fn with_reason(code: CloseCode, reason: impl Into<Cow<'static, str>>) -> Self {
        let mut reason = reason.into();
        if reason.len() > Self::MAX_REASON_BYTES {
            let mut end = Self::MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = Cow::Owned(reason[..end].to_string());
        }
        Self { code, reason }
    }

    /// The reason sent in the close frame.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the client may reconnect by itself.
    pub const fn may_reconnect(&self) -> bool {
        self.code.may_reconnect()
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.code(), self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
            assert_eq!(ErrorCode::try_from(u16::from(code)), Ok(code));
            assert!(!code.reason().is_empty());
        }
        assert_eq!(ErrorCode::from_code(1000), None);
        assert_eq!(ErrorCode::try_from(2006), Err(UnknownErrorCode(2006)));
    }

    #[test]
    fn http_statuses_follow_the_contract() {
        let expected = [
            (1001, 400),
            (1002, 400),
            (1003, 401),
            (1004, 401),
            (1005, 401),
            (1006, 401),
            (1007, 404),
            (1008, 429),
            (2001, 422),
            (2002, 503),
            (2003, 409),
            (2004, 403),
            (2005, 504),
        ];
        for (code, status) in expected {
            let code = ErrorCode::from_code(code).unwrap();
            assert_eq!(code.http_status(), status, "{code}");
        }
    }

    #[test]
    fn serializes_as_a_number() {
        assert_eq!(serde_json::to_string(&ErrorCode::Conflict).unwrap(), "2003");
        let code: ErrorCode = serde_json::from_str("1005").unwrap();
        assert_eq!(code, ErrorCode::Replayed);
        assert!(serde_json::from_str::<ErrorCode>("999").is_err());
    }

    #[test]
    fn protocol_errors_are_the_1xxx_range() {
        assert!(ErrorCode::RateLimited.is_protocol_error());
        assert!(!ErrorCode::PluginRejected.is_protocol_error());
    }

    #[test]
    fn close_codes_round_trip_and_reasons_fit() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(code.code()), Some(code));
            assert!(!code.reason().is_empty());
            assert_eq!(code.may_reconnect(), close::may_reconnect(code.code()));
        }
        let long = "é".repeat(100);
        let d = Disconnect::with_reason(CloseCode::Kicked, long);
        assert!(d.reason().len() <= Disconnect::MAX_REASON_BYTES);
        assert!(d.reason().len() >= Disconnect::MAX_REASON_BYTES - 1);
        assert_eq!(Disconnect::new(CloseCode::Replaced).reason(), "replaced");
        assert!(!Disconnect::new(CloseCode::Kicked).may_reconnect());
    }

    #[test]
    fn reconnect_verdicts() {
        use close::*;
        for code in [GOING_AWAY, HEARTBEAT_TIMEOUT, SLOW_CONSUMER, 1006, 1011] {
            assert!(may_reconnect(code), "{code}");
        }
        for code in [
            FRAME_TOO_LARGE,
            AUTH_FAILED,
            TOO_MANY_BAD_FRAMES,
            REPLACED,
            KICKED,
        ] {
            assert!(!may_reconnect(code), "{code}");
            assert!(!reason(code).is_empty());
        }
    }
}
