//! The three servers a run can target and a connected client of any.
//!
//! Chorus clients sign their connect query and every frame (PROTOCOL
//! sections 2 to 4). The peers (Node `ws` and the bare tokio-tungstenite
//! server) speak plain JSON; their clients send the very same bytes (a
//! signed frame, whose signature a peer ignores) so every server parses
//! frames of one size.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use chorus_protocol::{ClientCredentials, issue_session, random_nonce};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::net::{Dialer, Ws};

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Chorus: signed connect query and frames, signed server API.
    Chorus,
    /// The Node.js `ws` peer of `bench/peer`: plain JSON.
    Peer,
    /// The bare tokio-tungstenite server of `bench/bare`: the Node peer's
    /// plain JSON, the physical limit.
    Bare,
}

/// A server to load, with what its clients need to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Chorus or the peer.
    pub kind: TargetKind,
    /// Address of the WebSocket and server-API listener.
    pub addr: SocketAddr,
    /// The app secret credentials are minted with (Chorus checks it; the
    /// peer ignores what is signed with it).
    pub secret: String,
}

impl Target {
    /// Fresh credentials of `user_id`, valid for a day.
    pub fn credentials(&self, user_id: u64) -> ClientCredentials {
        ClientCredentials::from(issue_session(
            self.secret.as_bytes(),
            user_id,
            unix_now() + 86_400,
        ))
    }

    /// Asks `GET /iapi/websocket/end_point` (PROTOCOL section 3) of this
    /// target, with `user_id`'s signed public parameters, where to connect:
    /// the answer's `end_point` (`ws://host:port`) as an address, which
    /// must be on loopback. Chorus only (the peers have no discovery).
    pub async fn discover(&self, http: &reqwest::Client, user_id: u64) -> Result<SocketAddr> {
        let creds = self.credentials(user_id);
        let query = creds.signed_query_with_nonce(unix_now(), &random_nonce());
        let url = format!("http://{}/iapi/websocket/end_point?{query}", self.addr);
        let response = http.get(url).send().await.context("end_point")?;
        let status = response.status().as_u16();
        let body: Value = serde_json::from_slice(&response.bytes().await.context("end_point")?)
            .unwrap_or(Value::Null);
        if status != 200 {
            bail!("end_point: HTTP error: {status} {body}");
        }
        end_point_addr(body["end_point"].as_str().unwrap_or_default())
    }

    /// The path and query a client of `user_id` connects to.
    fn connect_path(&self, creds: &ClientCredentials) -> String {
        match self.kind {
            // Each connect query is single-use: a nonce makes it unique.
            TargetKind::Chorus => format!(
                "/?{}",
                creds.signed_query_with_nonce(unix_now(), &random_nonce())
            ),
            TargetKind::Peer | TargetKind::Bare => format!("/?user_id={}", creds.user_id),
        }
    }
}

/// A connected client, past its `connected` frame.
pub struct Client {
    /// The user it acts as.
    pub user_id: u64,
    /// The socket.
    pub ws: Ws,
    /// The room the server has the user in, from `connected`'s
    /// `channel_name` (empty when in none, and always on the peers).
    pub channel_name: String,
    /// What it signs its frames with.
    signer: Signer,
}

/// What a client signs its frames with, apart from its socket, so that one
/// task can write a client's frames while another reads its socket.
pub struct Signer {
    /// Its credentials.
    creds: ClientCredentials,
    /// The connection's `online_token` (empty on the peer).
    online_token: String,
}

impl Signer {
    /// A signed frame of `action` with `fields`, a fresh nonce and the
    /// current timestamp.
    pub fn frame(&self, action: &str, mut fields: Map<String, Value>) -> String {
        fields.insert("nonce".into(), random_nonce().into());
        self.creds
            .signed_frame(action, &self.online_token, unix_now(), fields)
            .expect("the load generator signs no floats")
    }

    /// A signed `ping`.
    pub fn ping(&self) -> String {
        self.frame("ping", Map::new())
    }
}

impl Client {
    /// Connects `user_id` to `target` and reads its `connected` frame.
    pub async fn connect(dialer: &Dialer, target: &Target, user_id: u64) -> Result<Client> {
        let creds = target.credentials(user_id);
        let mut ws = dialer
            .websocket(target.addr, &target.connect_path(&creds))
            .await
            .with_context(|| format!("user {user_id}"))?;
        let connected = first_frame(&mut ws).await?;
        if connected["action"] != "connected" {
            bail!("user {user_id}: expected `connected`, got {connected}");
        }
        let text = |key: &str| connected[key].as_str().unwrap_or_default().to_owned();
        Ok(Client {
            user_id,
            channel_name: text("channel_name"),
            signer: Signer {
                creds,
                online_token: text("online_token"),
            },
            ws,
        })
    }

    /// Splits the client into what signs its frames and its socket.
    pub fn into_parts(self) -> (Signer, Ws) {
        (self.signer, self.ws)
    }

    /// A signed frame of `action` with `fields`, a fresh nonce and the
    /// current timestamp.
    pub fn frame(&self, action: &str, fields: Map<String, Value>) -> String {
        self.signer.frame(action, fields)
    }

    /// A signed `ping`.
    pub fn ping(&self) -> String {
        self.signer.ping()
    }

    /// The report a delegate sends for a relayed `frame` (PROTOCOL section
    /// 6), or `None` when the frame is not a relay.
    pub fn report_for(&self, frame: &Value) -> Option<String> {
        if frame["relay"] != true {
            return None;
        }
        let action = frame["action"].as_str()?;
        let mut fields = Map::new();
        fields.insert("user_id".into(), subject_of(frame)?.into());
        if let Some(msg_id) = frame["msg_id"].as_str() {
            fields.insert("msg_id".into(), msg_id.into());
        }
        Some(self.frame(&format!("{action}_report"), fields))
    }

    /// Sends a text frame.
    pub async fn send(&mut self, text: String) -> Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }
}

/// The address of an `end_point` URL (`ws://127.0.0.1:9999`, a trailing
/// `/` allowed); only loopback addresses are accepted.
pub fn end_point_addr(end_point: &str) -> Result<SocketAddr> {
    let host_port = end_point
        .strip_prefix("ws://")
        .with_context(|| format!("end_point {end_point:?} is not ws://"))?
        .trim_end_matches('/');
    let addr: SocketAddr = host_port
        .parse()
        .with_context(|| format!("end_point {end_point:?}"))?;
    if !addr.ip().is_loopback() {
        bail!("end_point {end_point:?} is not on loopback");
    }
    Ok(addr)
}

/// The subject of a notification: the user its report names.
fn subject_of(frame: &Value) -> Option<u64> {
    frame["user_id"]
        .as_u64()
        .or_else(|| frame["gift"]["sender_id"].as_u64())
        .or_else(|| frame["room_seat"]["user_id"].as_u64())
}

/// The first text frame of a new connection, as JSON.
async fn first_frame(ws: &mut Ws) -> Result<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
            Some(Ok(Message::Close(close))) => bail!("closed before `connected`: {close:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("socket error before `connected`: {e}"),
            None => bail!("socket ended before `connected`"),
        }
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The profile fields `enter_room` requires.
pub fn profile(user_id: u64) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "nickname": format!("user{user_id}"),
        "sex": 1,
        "avatar_url": format!("https://a.example/{user_id}.png"),
        "avatar_small_url": format!("https://a.example/{user_id}_s.png"),
        "i_segment": "newcomer",
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_end_points() {
        let addr = end_point_addr("ws://127.0.0.1:19981").unwrap();
        assert_eq!(addr, "127.0.0.1:19981".parse().unwrap());
        assert_eq!(end_point_addr("ws://127.0.0.1:9/").unwrap().port(), 9);
        assert!(end_point_addr("wss://127.0.0.1:9").is_err());
        assert!(end_point_addr("ws://10.0.0.1:9").is_err());
        assert!(end_point_addr("ws://localhost:9").is_err());
    }
}
