//! Session credentials (PROTOCOL section 1).
//!
//! The app backend mints a `sid` for a user at login:
//! `"<user_id>.<expires_at>.<nonce>." + hex(HMAC-SHA256(app_secret, payload))`,
//! and hands the client the sid with its `sign_key`,
//! `hex(HMAC-SHA256(app_secret, "sign." + sid))`. Chorus checks a sid
//! statelessly with [`verify_sid`] and derives the same sign_key to check
//! the client's signatures; the client never sees `app_secret`.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::codes::ErrorCode;
use crate::mac;

/// The longest nonce a sid may carry.
pub const MAX_SID_NONCE_LEN: usize = 64;

/// The length of the nonces [`random_nonce`] makes.
pub const RANDOM_NONCE_LEN: usize = 16;

/// Why a sid could not be minted or was refused.
///
/// Every refusal maps to error 1003 ([`CredentialError::code`]); the
/// variants exist for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The nonce is not 1 to 64 characters of `[A-Za-z0-9_-]`.
    #[error("sid nonce must be 1 to 64 characters of [A-Za-z0-9_-]")]
    InvalidNonce,
    /// The sid is not `<user_id>.<expires_at>.<nonce>.<mac>`.
    #[error("malformed sid: {0}")]
    Malformed(&'static str),
    /// The sid's MAC does not match its payload under this secret.
    #[error("sid signature does not match")]
    BadMac,
    /// The sid expired.
    #[error("sid expired at {expires_at} (now {now})")]
    Expired {
        /// When the sid expired, unix seconds.
        expires_at: u64,
        /// The time it was checked at, unix seconds.
        now: u64,
    },
    /// The sid was minted for another user than the one claimed.
    #[error("sid belongs to user {sid_user}, not to user {claimed}")]
    UserMismatch {
        /// The user the sid was minted for.
        sid_user: u64,
        /// The user the client claimed to be.
        claimed: u64,
    },
}

impl CredentialError {
    /// The protocol error this refusal is reported as: always 1003.
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::BadSignature
    }
}

/// What a valid sid says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidClaims {
    /// The user the sid was minted for.
    pub user_id: u64,
    /// When the sid stops being valid, unix seconds.
    pub expires_at: u64,
    /// The minting nonce, which tells two sids of one user apart.
    pub nonce: String,
}

/// A freshly issued session, as `chorus token` prints it and
/// `POST /api/v1/sessions` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedSession {
    /// The user the session belongs to.
    pub user_id: u64,
    /// The session token.
    pub sid: String,
    /// The key the client signs with, derived from the sid.
    pub sign_key: String,
    /// When the sid expires, unix seconds.
    pub expires_at: u64,
}

/// True when `nonce` may appear in a sid: 1 to 64 characters of
/// `[A-Za-z0-9_-]` (no `.`, which separates the sid's parts).
pub fn valid_sid_nonce(nonce: &str) -> bool {
    (1..=MAX_SID_NONCE_LEN).contains(&nonce.len()) && is_token_chars(nonce)
}

/// Mints the sid of `user_id`, valid until `expires_at` (unix seconds).
///
/// Fails only when `nonce` is not valid ([`valid_sid_nonce`]).
pub fn mint_sid(
    app_secret: &[u8],
    user_id: u64,
    expires_at: u64,
    nonce: &str,
) -> Result<String, CredentialError> {
    if !valid_sid_nonce(nonce) {
        return Err(CredentialError::InvalidNonce);
    }
    let payload = format!("{user_id}.{expires_at}.{nonce}");
    let tag = mac::hmac_hex(app_secret, &[payload.as_bytes()]);
    Ok(format!("{payload}.{tag}"))
}

/// The sign_key of `sid`: `hex(HMAC-SHA256(app_secret, "sign." + sid))`.
pub fn sign_key(app_secret: &[u8], sid: &str) -> String {
    mac::hmac_hex(app_secret, &[b"sign.", sid.as_bytes()])
}

/// Mints a sid with a [`random_nonce`] and derives its sign_key.
pub fn issue_session(app_secret: &[u8], user_id: u64, expires_at: u64) -> IssuedSession {
    let payload = format!("{user_id}.{expires_at}.{}", random_nonce());
    let sid = format!(
        "{payload}.{}",
        mac::hmac_hex(app_secret, &[payload.as_bytes()])
    );
    IssuedSession {
        user_id,
        sign_key: sign_key(app_secret, &sid),
        sid,
        expires_at,
    }
}

/// Checks `sid` at time `now_unix`: well formed, MAC valid (compared in
/// constant time), not expired, and, when `claimed_user_id` is given,
/// minted for that user.
///
/// A sid is expired from the second `expires_at` on (`now >= expires_at`),
/// as a JWT `exp` is. The MAC is checked before anything the sid claims is
/// believed.
pub fn verify_sid(
    app_secret: &[u8],
    sid: &str,
    claimed_user_id: Option<u64>,
    now_unix: u64,
) -> Result<SidClaims, CredentialError> {
    let (payload, tag) = sid.rsplit_once('.').ok_or(CredentialError::Malformed(
        "expected <user_id>.<expires_at>.<nonce>.<mac>",
    ))?;
    let claims = parse_payload(payload)?;
    if !mac::is_lower_hex_tag(tag) {
        return Err(CredentialError::Malformed(
            "the MAC must be 64 lowercase hex digits",
        ));
    }
    if !mac::verify_hex(app_secret, &[payload.as_bytes()], tag) {
        return Err(CredentialError::BadMac);
    }
    if now_unix >= claims.expires_at {
        return Err(CredentialError::Expired {
            expires_at: claims.expires_at,
            now: now_unix,
        });
    }
    match claimed_user_id {
        Some(claimed) if claimed != claims.user_id => Err(CredentialError::UserMismatch {
            sid_user: claims.user_id,
            claimed,
        }),
        _ => Ok(claims),
    }
}

/// A random nonce of [`RANDOM_NONCE_LEN`] characters of `[A-Za-z0-9_-]`
/// (96 bits), valid both in a sid and as a server API nonce.
pub fn random_nonce() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; RANDOM_NONCE_LEN];
    rand::rng().fill(&mut bytes);
    // 256 is a multiple of 64, so masking keeps every character equally
    // likely.
    bytes
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte & 63)]))
        .collect()
}

/// True when every character of `text` is one of `[A-Za-z0-9_-]`.
pub(crate) fn is_token_chars(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses `<user_id>.<expires_at>.<nonce>`.
fn parse_payload(payload: &str) -> Result<SidClaims, CredentialError> {
    let mut parts = payload.split('.');
    let (Some(user_id), Some(expires_at), Some(nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CredentialError::Malformed(
            "expected <user_id>.<expires_at>.<nonce>.<mac>",
        ));
    };
    if !valid_sid_nonce(nonce) {
        return Err(CredentialError::Malformed("bad nonce"));
    }
    Ok(SidClaims {
        user_id: parse_decimal(user_id).ok_or(CredentialError::Malformed("bad user_id"))?,
        expires_at: parse_decimal(expires_at)
            .ok_or(CredentialError::Malformed("bad expires_at"))?,
        nonce: nonce.to_owned(),
    })
}

/// Parses a u64 written as minted: decimal digits only, no sign, no
/// leading zero, so that a user's sid has one spelling.
fn parse_decimal(text: &str) -> Option<u64> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{APP_SECRET, SID, SIGN_KEY};

    const NOW: u64 = 1_764_134_400;

    #[test]
    fn mints_the_example_sid_and_sign_key() {
        assert_eq!(
            mint_sid(APP_SECRET, 1233, 1_893_456_000, "n0nce42").unwrap(),
            SID
        );
        assert_eq!(sign_key(APP_SECRET, SID), SIGN_KEY);
    }

    #[test]
    fn verifies_the_example_sid() {
        let claims = verify_sid(APP_SECRET, SID, Some(1233), NOW).unwrap();
        assert_eq!(
            claims,
            SidClaims {
                user_id: 1233,
                expires_at: 1_893_456_000,
                nonce: "n0nce42".into()
            }
        );
        assert!(verify_sid(APP_SECRET, SID, None, NOW).is_ok());
    }

    #[test]
    fn refuses_an_expired_sid() {
        let err = verify_sid(APP_SECRET, SID, Some(1233), 1_893_456_000).unwrap_err();
        assert!(matches!(err, CredentialError::Expired { .. }), "{err}");
        assert!(verify_sid(APP_SECRET, SID, Some(1233), 1_893_455_999).is_ok());
        assert_eq!(err.code(), ErrorCode::BadSignature);
    }

    #[test]
    fn refuses_another_user() {
        let err = verify_sid(APP_SECRET, SID, Some(1234), NOW).unwrap_err();
        assert_eq!(
            err,
            CredentialError::UserMismatch {
                sid_user: 1233,
                claimed: 1234
            }
        );
    }

    #[test]
    fn refuses_a_tampered_sid() {
        // A flipped MAC digit.
        let mut tampered = SID.to_owned();
        tampered.pop();
        tampered.push('f');
        assert_eq!(
            verify_sid(APP_SECRET, &tampered, None, NOW),
            Err(CredentialError::BadMac)
        );
        // Another user under the original MAC.
        let forged = SID.replacen("1233", "1234", 1);
        assert_eq!(
            verify_sid(APP_SECRET, &forged, None, NOW),
            Err(CredentialError::BadMac)
        );
        // A later expiry under the original MAC.
        let extended = SID.replacen("1893456000", "1993456000", 1);
        assert_eq!(
            verify_sid(APP_SECRET, &extended, None, NOW),
            Err(CredentialError::BadMac)
        );
        // The right MAC under another secret.
        assert_eq!(
            verify_sid(b"other", SID, None, NOW),
            Err(CredentialError::BadMac)
        );
    }

    #[test]
    fn refuses_malformed_sids() {
        let upper = SID.to_uppercase().replacen("N0NCE42", "n0nce42", 1);
        let cases = [
            "",
            "1233",
            "1233.1893456000.n0nce42",
            "a.1.n.0000000000000000000000000000000000000000000000000000000000000000",
            "01233.1893456000.n0nce42.113f02893d3a9df7ae1493cd250b28abcef50284bee04fa747fb7726a018b81e",
            "+1233.1893456000.n0nce42.113f02893d3a9df7ae1493cd250b28abcef50284bee04fa747fb7726a018b81e",
            "1233.1893456000.n0n.ce42.113f02893d3a9df7ae1493cd250b28abcef50284bee04fa747fb7726a018b81e",
            "1233.1893456000..113f02893d3a9df7ae1493cd250b28abcef50284bee04fa747fb7726a018b81e",
            "99999999999999999999.1.n.113f02893d3a9df7ae1493cd250b28abcef50284bee04fa747fb7726a018b81e",
            upper.as_str(),
        ];
        for sid in cases {
            let err = verify_sid(APP_SECRET, sid, None, NOW).unwrap_err();
            assert!(matches!(err, CredentialError::Malformed(_)), "{sid}: {err}");
        }
    }

    #[test]
    fn nonces() {
        assert!(valid_sid_nonce("a"));
        assert!(valid_sid_nonce(&"x".repeat(64)));
        for bad in ["", "a.b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_sid_nonce(bad), "{bad}");
            assert_eq!(
                mint_sid(APP_SECRET, 1, 2, bad),
                Err(CredentialError::InvalidNonce)
            );
        }
        let nonce = random_nonce();
        assert_eq!(nonce.len(), RANDOM_NONCE_LEN);
        assert!(valid_sid_nonce(&nonce));
        assert_ne!(nonce, random_nonce());
    }

    #[test]
    fn issued_sessions_verify() {
        let session = issue_session(APP_SECRET, 42, NOW + 60);
        let claims = verify_sid(APP_SECRET, &session.sid, Some(42), NOW).unwrap();
        assert_eq!(claims.expires_at, NOW + 60);
        assert_eq!(session.sign_key, sign_key(APP_SECRET, &session.sid));
    }
}
