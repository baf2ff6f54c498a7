//! The WebSocket conformance echo: a dev-only stand-in for the session
//! loop, so that Autobahn|Testsuite (`scripts/autobahn`), which tests an
//! echo server, can judge Chorus's WebSocket layer.
//!
//! What stays production: the listener, the signed-query check and its
//! single use, the `WebSocketUpgrade` with the configured buffer and size
//! limits (`http::ws` builds it once for both), tungstenite's framing,
//! fragmentation, control frames, UTF-8 validation and close handshake,
//! and the close codes the session gives transport errors
//! ([`transport_error`]: 1009 too large, 1007 invalid UTF-8). What is
//! replaced: the session's frame handling (JSON, signatures, actions),
//! which answers any text Autobahn sends with an error frame instead of
//! an echo.
//!
//! Only `chorus serve --dev` with `dev.ws_echo = true` runs it; outside
//! `--dev` the key is refused ([`crate::config::Config::prepare`]).

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chorus_protocol::{CloseCode, Disconnect};
use tokio_util::sync::CancellationToken;

use crate::session::inbound::{Verdict, transport_error};

/// Echoes every text and binary message back as it came, until the peer
/// closes, the socket fails or the server shuts down (close 1001, as a
/// session would); a transport error closes with the code the session
/// would use.
pub async fn echo(mut socket: WebSocket, shutdown: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => {
                close(&mut socket, &Disconnect::new(CloseCode::GoingAway)).await;
                return;
            }
            incoming = socket.recv() => incoming,
        };
        let reply = match incoming {
            None => return,
            Some(Ok(Message::Text(text))) => Message::Text(text),
            Some(Ok(Message::Binary(bytes))) => Message::Binary(bytes),
            // tungstenite answers pings and a close by itself; reading on
            // after a close lets it flush the reply and end the stream.
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                if let Verdict::Close(how) = transport_error(error) {
                    close(&mut socket, &how).await;
                }
                return;
            }
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

/// Sends a close frame, best effort.
async fn close(socket: &mut WebSocket, how: &Disconnect) {
    let frame = CloseFrame {
        code: how.code.code(),
        reason: how.reason().to_string().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
