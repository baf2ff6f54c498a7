//! Authentication of the server API, used by the app backend (PROTOCOL
//! section 8).
//!
//! Each request carries three headers: a timestamp, a nonce and
//! `hex(HMAC-SHA256(app_secret, timestamp + "\n" + nonce + "\n" + METHOD +
//! "\n" + path_and_query + "\n" + raw_body))`. The server checks the
//! signature here; freshness ([`crate::signing::is_fresh`]) and the
//! single use of a nonce need server state and stay with the server.

use crate::credentials::is_token_chars;
use crate::mac;

/// Header holding the request's unix time in seconds. Lowercase, as HTTP/2
/// sends header names and as `http::HeaderName::from_static` requires;
/// header names match case-insensitively.
pub const TIMESTAMP_HEADER: &str = "x-chorus-timestamp";

/// Header holding the request's nonce (see [`valid_api_nonce`]).
pub const NONCE_HEADER: &str = "x-chorus-nonce";

/// Header holding the request's signature ([`api_signature`]).
pub const SIGNATURE_HEADER: &str = "x-chorus-signature";

/// The shortest allowed server API nonce.
pub const MIN_API_NONCE_LEN: usize = 8;

/// The longest allowed server API nonce.
pub const MAX_API_NONCE_LEN: usize = 64;

/// True when `nonce` is 8 to 64 characters of `[A-Za-z0-9_-]`.
pub fn valid_api_nonce(nonce: &str) -> bool {
    (MIN_API_NONCE_LEN..=MAX_API_NONCE_LEN).contains(&nonce.len()) && is_token_chars(nonce)
}

/// The signature of a server API request.
///
/// `timestamp` and `nonce` are the header values as sent, `method` the
/// request method as sent (`"POST"`), `path_and_query` the raw request
/// target as sent (percent-encoding included), `body` the raw body
/// (empty for a GET).
pub fn api_signature(
    app_secret: &[u8],
    timestamp: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    mac::hmac_hex(
        app_secret,
        &signed_parts(timestamp, nonce, method, path_and_query, body),
    )
}

/// True when `signature` is the [`api_signature`] of the request, compared
/// in constant time; only 64 lowercase hex digits can match.
pub fn verify_api_signature(
    app_secret: &[u8],
    timestamp: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    mac::verify_hex(
        app_secret,
        &signed_parts(timestamp, nonce, method, path_and_query, body),
        signature,
    )
}

/// The three authentication headers of a request, as `(name, value)`
/// pairs, for an app backend or a test that calls the server API.
pub fn signed_headers(
    app_secret: &[u8],
    timestamp: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signature = api_signature(app_secret, timestamp, nonce, method, path_and_query, body);
    [
        (TIMESTAMP_HEADER, timestamp.to_owned()),
        (NONCE_HEADER, nonce.to_owned()),
        (SIGNATURE_HEADER, signature),
    ]
}

/// The signed message, as parts to feed the MAC without copying the body.
fn signed_parts<'a>(
    timestamp: &'a str,
    nonce: &'a str,
    method: &'a str,
    path_and_query: &'a str,
    body: &'a [u8],
) -> [&'a [u8]; 9] {
    [
        timestamp.as_bytes(),
        b"\n",
        nonce.as_bytes(),
        b"\n",
        method.as_bytes(),
        b"\n",
        path_and_query.as_bytes(),
        b"\n",
        body,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::APP_SECRET;

    const BODY: &str =
        r#"{"action":"send_topic_msg","user_id":1233,"channel_name":"room_88","content":"hi"}"#;
    const POST_SIGNATURE: &str = "4d510a3734c855bb0d50533df137bd24b6da41c653958de9f7ec14fb4a9c8212";
    const GET_SIGNATURE: &str = "82ca21a4fc61cac255b7c06ffd960f4701eb585304ddc591b41ac8bc2e2934fd";

    #[test]
    fn reproduces_the_example_signatures() {
        let post = api_signature(
            APP_SECRET,
            "1764134400",
            "a1b2c3d4",
            "POST",
            "/api/v1/actions",
            BODY.as_bytes(),
        );
        assert_eq!(post, POST_SIGNATURE);
        let get = api_signature(
            APP_SECRET,
            "1764134400",
            "a1b2c3d4",
            "GET",
            "/api/v1/users/1233",
            b"",
        );
        assert_eq!(get, GET_SIGNATURE);
    }

    #[test]
    fn verifies_and_refuses() {
        let args = (
            APP_SECRET,
            "1764134400",
            "a1b2c3d4",
            "GET",
            "/api/v1/users/1233",
            &b""[..],
        );
        assert!(verify_api_signature(
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
            GET_SIGNATURE
        ));
        assert!(!verify_api_signature(
            args.0,
            args.1,
            args.2,
            args.3,
            "/api/v1/users/1234",
            args.5,
            GET_SIGNATURE
        ));
        assert!(!verify_api_signature(
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
            &GET_SIGNATURE.to_uppercase()
        ));
        assert!(!verify_api_signature(
            args.0, args.1, args.2, args.3, args.4, args.5, "nope"
        ));
        let headers = signed_headers(args.0, args.1, args.2, args.3, args.4, args.5);
        assert_eq!(headers[2], (SIGNATURE_HEADER, GET_SIGNATURE.to_owned()));
    }

    #[test]
    fn nonces() {
        assert!(valid_api_nonce("a1b2c3d4"));
        assert!(valid_api_nonce(&"-".repeat(64)));
        for bad in ["a1b2c3d", "a1b2c3d.", "a1b2 c3d4", &"x".repeat(65)] {
            assert!(!valid_api_nonce(bad), "{bad}");
        }
        assert!(valid_api_nonce(&crate::credentials::random_nonce()));
    }
}
