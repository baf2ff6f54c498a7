//! What a client does with its credentials (PROTOCOL sections 2 to 4):
//! sign the public query parameters that open a connection or call a
//! read-only GET, and sign every frame it sends.

use serde_json::{Map, Value};

use crate::canonical::{CanonicalError, SIGN_FIELD, canonical_frame, canonical_query};
use crate::credentials::IssuedSession;
use crate::signing;

/// The credentials the app backend hands a client at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The user the client acts as.
    pub user_id: u64,
    /// The session token.
    pub sid: String,
    /// The key the client signs with; the client never sees `app_secret`.
    pub sign_key: String,
}

impl ClientCredentials {
    /// Credentials from their three parts.
    pub fn new(user_id: u64, sid: impl Into<String>, sign_key: impl Into<String>) -> Self {
        Self {
            user_id,
            sid: sid.into(),
            sign_key: sign_key.into(),
        }
    }

    /// The signed public parameters as a URL query string (no leading
    /// `?`): `user_id=…&sid=…&timestamp=…&sign=…`.
    ///
    /// Opening a WebSocket consumes a query within the skew window, so a
    /// reconnect within the same second needs
    /// [`signed_query_with_nonce`](Self::signed_query_with_nonce).
    pub fn signed_query(&self, timestamp: u64) -> String {
        self.query_with(timestamp, None, &[])
    }

    /// Like [`signed_query`](Self::signed_query), with a signed `nonce`
    /// parameter that makes the query unique.
    pub fn signed_query_with_nonce(&self, timestamp: u64, nonce: &str) -> String {
        self.query_with(timestamp, Some(nonce), &[])
    }

    /// Like [`signed_query_with_nonce`](Self::signed_query_with_nonce),
    /// with more signed parameters (a reconnecting client's `resume_*`).
    pub fn signed_query_with_params(
        &self,
        timestamp: u64,
        nonce: &str,
        extra: &[(&str, &str)],
    ) -> String {
        self.query_with(timestamp, Some(nonce), extra)
    }

    /// Sets `frame["sign"]` to the signature of the frame's canonical
    /// string. The caller sets `action`, `online_token`, `timestamp`, `sid`
    /// and the action's fields first; an existing `sign` is replaced.
    pub fn sign_frame(&self, frame: &mut Map<String, Value>) -> Result<(), CanonicalError> {
        let sign = signing::sign(&self.sign_key, &canonical_frame(frame)?);
        frame.insert(SIGN_FIELD.to_owned(), Value::String(sign));
        Ok(())
    }

    /// A complete signed frame, as text: `fields` plus `action`,
    /// `online_token`, `timestamp` (unix seconds), this session's `sid`,
    /// and `sign`. The envelope wins over a field of the same name.
    pub fn signed_frame(
        &self,
        action: &str,
        online_token: &str,
        timestamp: u64,
        mut fields: Map<String, Value>,
    ) -> Result<String, CanonicalError> {
        fields.insert("action".into(), action.into());
        fields.insert("online_token".into(), online_token.into());
        fields.insert("timestamp".into(), timestamp.into());
        fields.insert("sid".into(), self.sid.clone().into());
        self.sign_frame(&mut fields)?;
        Ok(Value::Object(fields).to_string())
    }

    /// Builds and signs the query, with an optional nonce.
    fn query_with(&self, timestamp: u64, nonce: Option<&str>, extra: &[(&str, &str)]) -> String {
        let user_id = self.user_id.to_string();
        let timestamp = timestamp.to_string();
        let mut params = vec![
            ("user_id", user_id.as_str()),
            ("sid", self.sid.as_str()),
            ("timestamp", timestamp.as_str()),
        ];
        if let Some(nonce) = nonce {
            params.push(("nonce", nonce));
        }
        params.extend_from_slice(extra);
        let sign = signing::sign(&self.sign_key, &canonical_query(&params));
        params.push((SIGN_FIELD, sign.as_str()));
        let encoded: Vec<String> = params
            .iter()
            .map(|(name, value)| format!("{name}={}", percent_encode(value)))
            .collect();
        encoded.join("&")
    }
}

impl From<IssuedSession> for ClientCredentials {
    fn from(session: IssuedSession) -> Self {
        Self {
            user_id: session.user_id,
            sid: session.sid,
            sign_key: session.sign_key,
        }
    }
}

/// Percent-encodes `value` for a query string: every byte outside the
/// unreserved set `[A-Za-z0-9-._~]` becomes `%XX`.
///
/// A sid is made of unreserved characters only, so it passes unchanged;
/// encoding everything else keeps a stray `&`, `+` or `=` from changing
/// what the server decodes and therefore what it verifies.
pub fn percent_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ClientFrame;
    use crate::vectors::{ONLINE_TOKEN, QUERY_SIGN, SID, SIGN_KEY, SIGN1, SIGN2, frame1, frame2};

    fn credentials() -> ClientCredentials {
        ClientCredentials::new(1233, SID, SIGN_KEY)
    }

    #[test]
    fn signs_the_example_query() {
        assert_eq!(
            credentials().signed_query(1_764_134_400),
            format!("user_id=1233&sid={SID}&timestamp=1764134400&sign={QUERY_SIGN}")
        );
    }

    #[test]
    fn signs_a_query_with_a_nonce() {
        let query = credentials().signed_query_with_nonce(1_764_134_400, "r 1");
        assert!(query.contains("&nonce=r%201&sign="), "{query}");
        let sign = query.rsplit_once("sign=").unwrap().1;
        let canonical = canonical_query(&[
            ("user_id", "1233"),
            ("sid", SID),
            ("timestamp", "1764134400"),
            ("nonce", "r 1"),
        ]);
        assert!(signing::verify(SIGN_KEY, &canonical, sign));
    }

    #[test]
    fn signs_the_example_frames() {
        for (frame, sign) in [(frame1(), SIGN1), (frame2(), SIGN2)] {
            let mut map: Map<String, Value> = serde_json::from_str(&frame).unwrap();
            credentials().sign_frame(&mut map).unwrap();
            assert_eq!(map["sign"], sign);
            // Signing again ignores the existing sign.
            credentials().sign_frame(&mut map).unwrap();
            assert_eq!(map["sign"], sign);
        }
    }

    #[test]
    fn builds_a_frame_the_server_accepts() {
        let text = credentials()
            .signed_frame("ping", ONLINE_TOKEN, 1_764_134_400, Map::new())
            .unwrap();
        let frame = ClientFrame::parse(&text).unwrap();
        assert_eq!(frame.sign, SIGN1);
        assert!(frame.verify_sign(SIGN_KEY));
    }

    #[test]
    fn refuses_to_sign_a_float() {
        let mut fields = Map::new();
        fields.insert("price".into(), serde_json::json!(1.5));
        let err = credentials()
            .signed_frame("buy", ONLINE_TOKEN, 1, fields)
            .unwrap_err();
        assert_eq!(
            err,
            CanonicalError::NotAnInteger {
                path: "price".into()
            }
        );
    }

    #[test]
    fn percent_encodes_outside_unreserved() {
        assert_eq!(percent_encode(SID), SID);
        assert_eq!(percent_encode("a-._~Z9"), "a-._~Z9");
        assert_eq!(percent_encode("a b&c=d+é/"), "a%20b%26c%3Dd%2B%C3%A9%2F");
    }
}
