//! `chorus plugin run`: one event through the real plugin runtime, with
//! the real limits (`plugins.call_timeout`, `plugins.max_memory`, grants
//! from the `<name>.toml` beside the file), against a room state given as
//! JSON, without a server (issue 14 item 4).
//!
//! `--state` file (every key optional):
//!
//! ```json
//! {"seats": 9,
//!  "rooms": {"room_1": {"room_id": 88, "members": [1, 2], "seated": {"1": 3}}},
//!  "calls": [{"user_id": 1, "peer_id": 2, "channel_name": "room_1"}],
//!  "kv": {"key": "value"},
//!  "attributes": {"room_1": {"owner": "1"}},
//!  "profiles": {"1": {"nickname": "Ann"}}}
//! ```
//!
//! `--event` file: `{"action": "…", "source": "client"|"server"|"system",
//! "user_id": 7, "payload": {…}}`.
//!
//! Prints one JSON object: the plugin and version, `result`, the state
//! `changes` and `notifications` the host would apply and deliver, and
//! `time_us` (the call, instantiation from the warm pool included),
//! `peak_memory_bytes` (the instance's largest linear memory) and `fuel`
//! (the wasmtime fuel the call consumed, about one unit per WebAssembly
//! instruction; null with `plugins.meter_fuel` off), and the application
//! `events` it emitted (contract 1.2 `emit`). Exits non-zero, with the
//! error code and reason, when the call fails.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use chorus::plugin::{PluginHost, Settings, Source};
use chorus::store::memory::MemoryStore;
use chorus::store::{StateChange, Store};

/// The room state of `--state`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct State {
    seats: Option<u32>,
    rooms: Map<String, Value>,
    calls: Vec<CallState>,
    kv: Map<String, Value>,
    attributes: Map<String, Value>,
    profiles: Map<String, Value>,
}

/// A room of `--state`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomState {
    room_id: u64,
    #[serde(default)]
    members: Vec<u64>,
    /// User id (as a string key) to seat id.
    #[serde(default)]
    seated: Map<String, Value>,
}

/// A call of `--state`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallState {
    user_id: u64,
    peer_id: u64,
    channel_name: String,
}

/// The event of `--event`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    action: String,
    source: Source,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    payload: Map<String, Value>,
}

/// Runs `plugin run`.
pub fn run(file: &Path, event: &Path, state: Option<&Path>) -> anyhow::Result<()> {
    let event: EventFile = serde_json::from_str(
        &std::fs::read_to_string(event).with_context(|| format!("reading {}", event.display()))?,
    )
    .with_context(|| format!("{} is not an event", event.display()))?;
    let state: State = match state {
        Some(path) => serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a room state", path.display()))?,
        None => State::default(),
    };
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the plugin file has no name")?
        .to_string();
    // The plugin alone in a folder of its own, with its `<name>.toml`, as
    // the server would load it.
    let dir = std::env::temp_dir().join(format!("chorus-plugin-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(file, dir.join(format!("{name}.wasm")))
        .with_context(|| format!("reading {}", file.display()))?;
    let toml = file.with_extension("toml");
    if toml.exists() {
        std::fs::copy(&toml, dir.join(format!("{name}.toml")))?;
    }
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(call(&dir, &name, event, state));
    let _ = std::fs::remove_dir_all(&dir);
    let report = outcome?;
    super::print_out(&serde_json::to_string_pretty(&report)?)?;
    if report.get("error_code").is_some() {
        bail!("the call failed");
    }
    Ok(())
}

async fn call(dir: &Path, name: &str, event: EventFile, state: State) -> anyhow::Result<Value> {
    let store = Arc::new(MemoryStore::new(state.seats.unwrap_or(9)));
    seed(&*store, name, &state).await?;
    let settings = Settings {
        dir: Some(dir.to_path_buf()),
        // The plugin alone, whatever the bundled ones serve.
        bundled: false,
        ..Settings::default()
    };
    let host = PluginHost::new(settings, store)?;
    for outcome in host.load_all().await {
        if let chorus::plugin::LoadOutcome::Failed { error, .. } = outcome {
            bail!("the server would refuse the plugin: {error}");
        }
    }
    let plugin = host.active(name).context("the plugin did not load")?;
    if !plugin.accepts(&event.action, event.source) {
        bail!(
            "{name} does not handle `{}` from {} (the server answers 1007)",
            event.action,
            event.source.as_str()
        );
    }
    let event = chorus::plugin::Event {
        action: event.action,
        source: event.source,
        user_id: event.user_id,
        payload: event.payload,
    };
    let started = Instant::now();
    let reply = host.call(&plugin, event).await;
    let time_us = started.elapsed().as_micros() as u64;
    // The largest linear memory the instance reached (noted after each
    // call, failed ones included), bytes.
    let peak_memory_bytes = host.detail(name).and_then(|detail| {
        detail
            .versions
            .iter()
            .find(|v| v.sha256 == plugin.sha256())
            .map(|v| v.peak_memory_bytes)
    });
    let mut report = json!({
        "plugin": plugin.name(),
        "version": plugin.version(),
        "time_us": time_us,
        "peak_memory_bytes": peak_memory_bytes,
        "fuel": plugin.last_call_fuel(),
    });
    match reply {
        Ok(reply) => {
            report["result"] = reply.result;
            report["changes"] = serde_json::to_value(&reply.changes)?;
            report["notifications"] = reply
                .notifications
                .iter()
                .map(|n| {
                    json!({
                        "target": n.target,
                        "body": n.body,
                        "subject": n.subject,
                        "delivery": n.delivery,
                    })
                })
                .collect();
            report["events"] = serde_json::to_value(&reply.events)?;
        }
        Err(error) => {
            report["error_code"] = json!(error.code());
            report["error_reason"] = json!(error.to_string());
        }
    }
    Ok(report)
}

/// Writes `state` into the store through ordinary batches.
async fn seed(store: &dyn Store, plugin: &str, state: &State) -> anyhow::Result<()> {
    let mut changes = Vec::new();
    for (channel, room) in &state.rooms {
        let room: RoomState =
            serde_json::from_value(room.clone()).with_context(|| format!("room {channel}"))?;
        for &user_id in &room.members {
            changes.push(StateChange::JoinRoom {
                user_id,
                channel_name: channel.clone(),
                room_id: room.room_id,
            });
        }
        for (user, seat) in &room.seated {
            changes.push(StateChange::TakeSeat {
                channel_name: channel.clone(),
                seat_id: seat.as_u64().context("a seat id")? as u32,
                user_id: user.parse().context("a user id")?,
            });
        }
    }
    for call in &state.calls {
        changes.push(StateChange::StartCall {
            user_id: call.user_id,
            receiver_id: call.peer_id,
            channel_name: call.channel_name.clone(),
        });
    }
    for (key, value) in &state.kv {
        changes.push(StateChange::KvSet {
            plugin: plugin.to_string(),
            key: key.clone(),
            value: value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string),
        });
    }
    for (channel, attributes) in &state.attributes {
        for (key, value) in attributes.as_object().context("attributes are an object")? {
            changes.push(StateChange::SetRoomAttr {
                channel_name: channel.clone(),
                key: key.clone(),
                value: Some(
                    value
                        .as_str()
                        .context("an attribute is a string")?
                        .to_string(),
                ),
                if_version: None,
            });
        }
    }
    store
        .apply(&changes)
        .await
        .map_err(|e| anyhow::anyhow!("the state does not apply: {e:?}"))?;
    for (user, profile) in &state.profiles {
        store
            .set_profile(user.parse()?, Some(&profile.to_string()), 3600)
            .await
            .map_err(|e| anyhow::anyhow!("storing a profile: {e:?}"))?;
    }
    Ok(())
}
