//! HMAC-SHA256 with lowercase hex, the one MAC of the protocol.
//!
//! Credentials, frame signatures and the server API all use it, so the
//! details that matter for security (constant-time comparison, a single
//! accepted spelling of a tag) live here once.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of a hex-encoded HMAC-SHA256 tag.
pub(crate) const MAC_HEX_LEN: usize = 64;

/// Returns `hex(HMAC-SHA256(key, parts concatenated))`, lowercase.
pub(crate) fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(keyed(key, parts).finalize().into_bytes())
}

/// Checks `tag_hex` against `HMAC-SHA256(key, parts concatenated)` in
/// constant time. A tag that is not exactly 64 lowercase hex digits is
/// false without computing anything.
pub(crate) fn verify_hex(key: &[u8], parts: &[&[u8]], tag_hex: &str) -> bool {
    let Some(tag) = decode_tag(tag_hex) else {
        return false;
    };
    // `verify_slice` compares with `subtle`, so timing does not reveal how
    // many leading bytes of a forged tag were right.
    keyed(key, parts).verify_slice(&tag).is_ok()
}

/// True when `text` is spelled like a tag: 64 lowercase hex digits.
pub(crate) fn is_lower_hex_tag(text: &str) -> bool {
    text.len() == MAC_HEX_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Decodes a tag spelled as [`is_lower_hex_tag`] demands.
fn decode_tag(text: &str) -> Option<[u8; MAC_HEX_LEN / 2]> {
    if !is_lower_hex_tag(text) {
        return None;
    }
    let mut tag = [0u8; MAC_HEX_LEN / 2];
    hex::decode_to_slice(text, &mut tag).ok()?;
    Some(tag)
}

/// An HMAC state keyed with `key` that has absorbed `parts`.
fn keyed(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // Invariant: HMAC takes keys of any length (long ones are hashed, short
    // ones padded), so `new_from_slice` never fails for HMAC-SHA256.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_concatenated() {
        assert_eq!(hmac_hex(b"k", &[b"ab", b"c"]), hmac_hex(b"k", &[b"abc"]));
    }

    #[test]
    fn verify_accepts_only_the_lowercase_tag() {
        let tag = hmac_hex(b"k", &[b"message"]);
        assert!(verify_hex(b"k", &[b"message"], &tag));
        assert!(!verify_hex(b"k", &[b"message"], &tag.to_uppercase()));
        assert!(!verify_hex(b"k", &[b"other"], &tag));
        assert!(!verify_hex(b"k", &[b"message"], &tag[..62]));
        assert!(!verify_hex(b"k", &[b"message"], "zz"));
    }
}
