//! Minting session credentials for a user: what `chorus token` prints and
//! `POST /api/v1/sessions` answers.

use chorus_protocol::credentials::{self, CredentialError};
use serde::Serialize;

/// A user's session credentials.
#[derive(Debug, Clone, Serialize)]
pub struct Token {
    /// The user.
    pub user_id: u64,
    /// The session token.
    pub sid: String,
    /// The key the client signs frames with.
    pub sign_key: String,
    /// Unix seconds after which the sid is refused.
    pub expires_at: u64,
}

/// Mints credentials valid for `ttl_s` seconds from now.
pub fn mint(app_secret: &[u8], user_id: u64, ttl_s: u64) -> Result<Token, CredentialError> {
    let expires_at = crate::ids::unix_now().saturating_add(ttl_s);
    let sid = credentials::mint_sid(
        app_secret,
        user_id,
        expires_at,
        &credentials::random_nonce(),
    )?;
    let sign_key = credentials::sign_key(app_secret, &sid);
    Ok(Token {
        user_id,
        sid,
        sign_key,
        expires_at,
    })
}
