//! The app backend's side: `POST /api/v1/actions`, signed for Chorus
//! (PROTOCOL section 8), plain for the peer.

use std::time::Duration;

use anyhow::{Context, Result};
use chorus_protocol::{random_nonce, signed_headers};
use serde_json::{Map, Value};

use crate::target::{Target, TargetKind, profile, unix_now};

/// The path of every action.
const ACTIONS_PATH: &str = "/api/v1/actions";

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(1);

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A server-API client of one target.
#[derive(Clone)]
pub struct Api {
    /// Keeps connections alive between calls.
    http: reqwest::Client,
    /// `http://<addr>/api/v1/actions`.
    url: String,
    /// `http://<addr>`.
    base: String,
    /// The secret requests are signed with; `None` for the peer.
    secret: Option<String>,
}

impl Api {
    /// A client of `target`'s server API.
    pub fn new(target: &Target) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .pool_max_idle_per_host(256)
            // Servers close idle keep-alive connections (Node after 5 s);
            // reusing one as it closes resets the call. Drop them first.
            .pool_idle_timeout(POOL_IDLE)
            .build()?;
        Ok(Self {
            http,
            url: format!("http://{}{ACTIONS_PATH}", target.addr),
            base: format!("http://{}", target.addr),
            secret: (target.kind == TargetKind::Chorus).then(|| target.secret.clone()),
        })
    }

    /// Runs an action; returns the HTTP status and the JSON answer.
    pub async fn action(&self, body: &Value) -> Result<(u16, Value)> {
        let body = body.to_string();
        let mut request = self.http.post(&self.url);
        if let Some(secret) = &self.secret {
            let headers = signed_headers(
                secret.as_bytes(),
                &unix_now().to_string(),
                &random_nonce(),
                "POST",
                ACTIONS_PATH,
                body.as_bytes(),
            );
            for (name, value) in headers {
                request = request.header(name, value);
            }
        }
        let response = request
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("server API call")?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.context("server API answer")?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// The members of room `channel` (`GET /api/v1/rooms/{channel}`,
    /// PROTOCOL section 8), in join order; empty for a room nobody is in
    /// (404 with 2004). Chorus only: the peers have no such route.
    pub async fn room_members(&self, channel: &str) -> Result<Vec<u64>> {
        let path = format!("/api/v1/rooms/{channel}");
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(secret) = &self.secret {
            let headers = signed_headers(
                secret.as_bytes(),
                &unix_now().to_string(),
                &random_nonce(),
                "GET",
                &path,
                b"",
            );
            for (name, value) in headers {
                request = request.header(name, value);
            }
        }
        let response = request.send().await.context("room read")?;
        let status = response.status().as_u16();
        let answer: Value = serde_json::from_slice(&response.bytes().await.context("room read")?)
            .unwrap_or(Value::Null);
        match status {
            200 => Ok(answer["members"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default()),
            404 => Ok(Vec::new()),
            _ => anyhow::bail!("room {channel}: HTTP {status} {answer}"),
        }
    }

    /// `enter_room` of `user_id` into `channel`; fails unless it is 200.
    pub async fn enter_room(&self, user_id: u64, channel: &str) -> Result<()> {
        let mut body: Map<String, Value> = profile(user_id);
        body.insert("action".into(), "enter_room".into());
        body.insert("user_id".into(), user_id.into());
        body.insert("channel_name".into(), channel.into());
        body.insert("room_id".into(), 1.into());
        let (status, answer) = self.action(&Value::Object(body)).await?;
        anyhow::ensure!(
            status == 200,
            "enter_room of {user_id}: HTTP {status} {answer}"
        );
        Ok(())
    }
}
