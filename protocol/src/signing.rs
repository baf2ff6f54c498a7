//! Signatures over canonical strings, and freshness (PROTOCOL section 2).
//!
//! `sign = hex(HMAC-SHA256(sign_key, canonical))`, keyed with the 64 ASCII
//! bytes of the hex `sign_key` itself (not the 32 bytes it encodes).

use subtle::ConstantTimeEq;

use crate::mac;

/// The signature of `canonical` under `sign_key`, 64 lowercase hex digits.
pub fn sign(sign_key: &str, canonical: &str) -> String {
    mac::hmac_hex(sign_key.as_bytes(), &[canonical.as_bytes()])
}

/// True when `sign_hex` is the signature of `canonical` under `sign_key`.
///
/// The comparison is constant-time. A sign that is not exactly 64
/// lowercase hex digits is false: accepting other spellings of one MAC
/// would let a replayed frame pass a replay check keyed on `sign`.
pub fn verify(sign_key: &str, canonical: &str, sign_hex: &str) -> bool {
    mac::verify_hex(sign_key.as_bytes(), &[canonical.as_bytes()], sign_hex)
}

/// True when `timestamp` is within `max_skew_secs` of `now_unix`, either
/// way: `|now - timestamp| <= max_skew`.
pub fn is_fresh(timestamp: i64, now_unix: u64, max_skew_secs: u64) -> bool {
    // i128 holds the difference of any i64 and u64 without overflow.
    let skew = (i128::from(now_unix) - i128::from(timestamp)).unsigned_abs();
    skew <= u128::from(max_skew_secs)
}

/// Compares two secrets, such as an `online_token` against the
/// connection's, in time that depends only on their lengths.
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{SIGN_KEY, SIGN1, SIGN2, canonical1, canonical2};

    #[test]
    fn reproduces_the_example_signs() {
        assert_eq!(sign(SIGN_KEY, &canonical1()), SIGN1);
        assert_eq!(sign(SIGN_KEY, &canonical2()), SIGN2);
        assert!(verify(SIGN_KEY, &canonical1(), SIGN1));
        assert!(verify(SIGN_KEY, &canonical2(), SIGN2));
    }

    #[test]
    fn refuses_wrong_signs() {
        assert!(!verify(SIGN_KEY, &canonical1(), SIGN2));
        assert!(!verify(SIGN_KEY, &canonical2(), &SIGN2.to_uppercase()));
        assert!(!verify(SIGN_KEY, &canonical1(), "not hex"));
        assert!(!verify(SIGN_KEY, &canonical1(), ""));
        assert!(!verify(&SIGN_KEY.replace('7', "8"), &canonical1(), SIGN1));
        let mut tampered = SIGN1.to_owned();
        tampered.replace_range(0..1, "5");
        assert!(!verify(SIGN_KEY, &canonical1(), &tampered));
    }

    #[test]
    fn freshness_is_symmetric_and_inclusive() {
        assert!(is_fresh(1000, 1120, 120));
        assert!(is_fresh(1120, 1000, 120));
        assert!(!is_fresh(1000, 1121, 120));
        assert!(!is_fresh(1121, 1000, 120));
        assert!(!is_fresh(i64::MIN, u64::MAX, 120));
        assert!(!is_fresh(-1, 0, 0));
    }

    #[test]
    fn tokens() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("ab", "abc"));
    }
}
