//! The Chorus wire protocol, as fixed by `PROTOCOL.md`: everything a client,
//! the app backend, a test or a load generator needs to speak to a Chorus
//! server, and everything the server needs to check what it is sent.
//!
//! This crate holds no I/O, no async runtime and no server state, so any
//! program can depend on it cheaply. Its modules follow the contract:
//!
//! - [`codes`]: the error codes of client frames and HTTP answers
//!   ([`ErrorCode`]) and the WebSocket close codes ([`CloseCode`],
//!   [`Disconnect`], [`close`]).
//! - [`credentials`]: minting and checking the stateless session token
//!   (`sid`) and deriving a client's `sign_key` from it (section 1).
//! - [`canonical`]: the canonical string of a frame or a query that is
//!   signed (section 2).
//! - [`signing`]: HMAC signatures over a canonical string, checked in
//!   constant time, and the freshness rule for timestamps (section 2).
//! - [`server_api`]: the header signature of the app backend's server API
//!   (section 8).
//! - [`frame`]: parsing and validating an incoming client frame, in the
//!   order section 4 gives, and building the server's error frame.
//! - [`server_frame`]: the frames the server sends besides notifications
//!   and errors (`connected`, `pong`, `ack`, `kicked`).
//! - [`client`]: what a client does with its credentials: sign the query
//!   that opens a connection and sign each frame it sends.
//!
//! Hex is lowercase everywhere, and only lowercase hex is accepted: a MAC
//! has exactly one spelling, so a replay or revocation check keyed on a
//! `sign` or a `sid` cannot be sidestepped by changing the case of a digit.

pub mod canonical;
pub mod client;
pub mod codes;
pub mod credentials;
pub mod frame;
pub mod server_api;
pub mod server_frame;
pub mod signing;

mod field_path;
mod mac;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod vectors;

pub use canonical::{CanonicalError, canonical_frame, canonical_json, canonical_query};
pub use client::ClientCredentials;
pub use codes::{CloseCode, Disconnect, ErrorCode, UnknownErrorCode, close};
pub use credentials::{
    CredentialError, IssuedSession, SidClaims, issue_session, mint_sid, random_nonce, sign_key,
    verify_sid,
};
pub use frame::{ClientFrame, FrameError, ServerError, check_field_types, error_body, error_frame};
pub use server_api::{api_signature, signed_headers, valid_api_nonce, verify_api_signature};
pub use server_frame::ServerFrame;
pub use signing::{is_fresh, sign, tokens_match, verify};
