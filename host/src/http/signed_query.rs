//! The signed "public parameters" of endpoint discovery, user info and the
//! WebSocket upgrade: `user_id`, `sid`, `timestamp`, `sign` (PROTOCOL
//! sections 2 and 3).

use std::collections::BTreeMap;

use super::HttpError;
use crate::app::App;
use crate::session::Principal;
use chorus_protocol::codes::ErrorCode;

/// A verified query: who the caller is, and the signature (for single-use
/// checks).
pub struct Verified {
    /// The caller, with the session's sign key.
    pub who: Principal,
    /// The query's `sign`.
    pub sign: String,
    /// The query's `timestamp` (unix seconds), for its replay window.
    pub timestamp: i64,
}

/// Checks the public parameters: present (1002), well-formed (1001), a
/// valid unexpired, unrevoked sid of that user (1003), fresh (1004),
/// signed (1003). With several nodes the revocation check asks Redis.
pub async fn verify(app: &App, params: &BTreeMap<String, String>) -> Result<Verified, HttpError> {
    for key in ["user_id", "sid", "timestamp", "sign"] {
        if !params.contains_key(key) {
            return Err(HttpError::new(
                ErrorCode::MissingField,
                format!("missing parameter {key}"),
            ));
        }
    }
    let user_id: u64 = params["user_id"]
        .parse()
        .map_err(|e| integer_error("user_id", "an unsigned integer", &e))?;
    let timestamp: i64 = params["timestamp"]
        .parse()
        .map_err(|e| integer_error("timestamp", "an integer", &e))?;
    let sid = &params["sid"];
    let now = crate::ids::unix_now();
    let claims =
        chorus_protocol::credentials::verify_sid(app.config.app_secret(), sid, Some(user_id), now)
            .map_err(|e| HttpError::new(ErrorCode::BadSignature, format!("bad sid: {e}")))?;
    if app.is_revoked(sid).await {
        return Err(HttpError::new(ErrorCode::BadSignature, "sid revoked"));
    }
    if !chorus_protocol::is_fresh(timestamp, now, app.max_skew()) {
        return Err(HttpError::new(
            ErrorCode::StaleTimestamp,
            "timestamp outside the accepted skew",
        ));
    }
    let sign_key = chorus_protocol::credentials::sign_key(app.config.app_secret(), sid);
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "sign")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let canonical = chorus_protocol::canonical::canonical_query(&pairs);
    if !chorus_protocol::signing::verify(&sign_key, &canonical, &params["sign"]) {
        return Err(HttpError::new(ErrorCode::BadSignature, "bad signature"));
    }
    Ok(Verified {
        who: Principal {
            user_id,
            sid: sid.clone(),
            sign_key,
            expires_at: claims.expires_at,
        },
        sign: params["sign"].clone(),
        timestamp,
    })
}

/// 1001 for a query integer, naming the real cause: out of range (it is an
/// integer, only too large or too small for the field) or not an integer.
fn integer_error(field: &str, what: &str, e: &std::num::ParseIntError) -> HttpError {
    use std::num::IntErrorKind;
    let reason = match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
            format!("{field} is out of range")
        }
        _ => format!("{field} must be {what}"),
    };
    HttpError::new(ErrorCode::MalformedFrame, reason)
}
