//! Configuration: every key has a default; a TOML file and `CHORUS_*`
//! environment variables override it (PROTOCOL section 11).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The secret `--dev` uses when none is configured. Never for production:
/// anyone who reads this file can mint sessions.
pub const DEV_APP_SECRET: &str = "chorus-dev-secret";
/// The admin token `--dev` uses when none is configured.
pub const DEV_ADMIN_TOKEN: &str = "chorus-dev-admin";
/// The longest duration any key accepts: a year is beyond every sensible
/// timeout and far from the overflow of the sums the server makes.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client-facing listener and credentials.
    pub server: ServerConfig,
    /// Liveness of client sessions.
    pub heartbeat: HeartbeatConfig,
    /// Freshness of signed frames and queries.
    pub signing: SigningConfig,
    /// Sizes and queue bounds.
    pub limits: LimitsConfig,
    /// The plugin runtime.
    pub plugins: PluginsConfig,
    /// How room notifications are delivered.
    pub delivery: DeliveryConfig,
    /// Delegated relay (seed section 2.4).
    pub relay: RelayConfig,
    /// Room shape.
    pub rooms: RoomsConfig,
    /// Where shared state lives.
    pub store: StoreConfig,
    /// The operators' listener.
    pub admin: AdminConfig,
    /// The demo room at `/demo/` (development only).
    pub demo: DemoConfig,
    /// Span export.
    pub telemetry: TelemetryConfig,
    /// Development and testing aids; refused outside `--dev`.
    pub dev: DevConfig,
    /// Host-level rules per action (`[actions.<name>]`), applied before
    /// routing; by default `send_gift` is accepted from the app backend
    /// only.
    pub actions: HashMap<String, ActionRule>,
    /// 1:1 calls.
    pub calls: CallsConfig,
    /// Notification history and resume after a dropped link (issue 17).
    pub recovery: RecoveryConfig,
    /// The endpoints of the app backend that get events (`[[webhooks]]`,
    /// issue 16); none: no event is recorded at all.
    pub webhooks: Vec<WebhookEndpoint>,
    /// How events are kept and when a room counts as vacated (`[events]`).
    pub events: EventsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            signing: SigningConfig::default(),
            limits: LimitsConfig::default(),
            plugins: PluginsConfig::default(),
            delivery: DeliveryConfig::default(),
            relay: RelayConfig::default(),
            rooms: RoomsConfig::default(),
            store: StoreConfig::default(),
            admin: AdminConfig::default(),
            demo: DemoConfig::default(),
            telemetry: TelemetryConfig::default(),
            dev: DevConfig::default(),
            actions: ActionRule::defaults(),
            calls: CallsConfig::default(),
            recovery: RecoveryConfig::default(),
            webhooks: Vec::new(),
            events: EventsConfig::default(),
        }
    }
}

/// One `[[webhooks]]` endpoint (README, "Webhooks").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Its name in metrics (`endpoint` label) and admin routes: 1 to 64
    /// characters of `[A-Za-z0-9_-]`, unique.
    pub name: String,
    /// `http://` or `https://` URL the batches are POSTed to.
    pub url: String,
    /// Event names it gets (`"room.exited"`, or a prefix ending in `.*`:
    /// `"seat.*"`, `"plugin.*"`); empty: every event.
    pub events: Vec<String>,
    /// Signs each request (at least 16 bytes), as `server.app_secret`
    /// signs the server API.
    pub secret: String,
    /// Most events in one request (1..=1000, default 20).
    pub batch_max: usize,
    /// How long a batch waits for more events before it leaves (default
    /// 250 ms).
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Events older than this are dropped undelivered and counted
    /// (default 24 h); also how long delivered events stay replayable.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How long one request may take (default 10 s); a timeout is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest wait between two attempts (default 30 s); waits start
    /// at 250 ms and double, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for WebhookEndpoint {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            events: Vec::new(),
            secret: String::new(),
            batch_max: 20,
            batch_wait: Duration::from_millis(250),
            max_age: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl WebhookEndpoint {
    /// Whether this endpoint gets events named `event`.
    /// Whether the endpoint gets `event` (`events` empty: every event).
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty()
            || self.events.iter().any(|f| match f.strip_suffix('*') {
                Some(prefix) => event.starts_with(prefix),
                None => f == event,
            })
    }

    fn check(&self) -> Result<(), ConfigError> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(ConfigError::Invalid(
                "webhooks.name must be 1 to 64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        let name = &self.name;
        // Parsed now, not at the first request: a URL that cannot be
        // requested would otherwise be retried for ever while events pile
        // up (found in review: `http://a b/`, port 99999).
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| ConfigError::Invalid(format!("webhooks {name}: url is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::Invalid(format!(
                "webhooks {name}: url must be http:// or https:// with a host"
            )));
        }
        for filter in &self.events {
            if !is_event_filter(filter) {
                return Err(ConfigError::Invalid(format!(
                    "webhooks {name}: events: {filter:?} is no event ({}), `plugin.<plugin>.<name>`, \
                     nor a prefix of one ending in `*`",
                    WEBHOOK_EVENTS.join(", ")
                )));
            }
        }
        if self.secret.len() < 16 {
            return Err(ConfigError::Invalid(format!(
                "webhooks {name}: secret must be at least 16 bytes"
            )));
        }
        if !(1..=1000).contains(&self.batch_max) {
            return Err(ConfigError::Invalid(format!(
                "webhooks {name}: batch_max must be 1..=1000"
            )));
        }
        let durations = [
            ("batch_wait", self.batch_wait),
            ("max_age", self.max_age),
            ("timeout", self.timeout),
            ("backoff_max", self.backoff_max),
        ];
        for (key, d) in durations {
            if d > MAX_DURATION || (key != "batch_wait" && d.is_zero()) {
                return Err(ConfigError::Invalid(format!(
                    "webhooks {name}: {key} must be more than 0s and at most 365 days"
                )));
            }
        }
        Ok(())
    }
}

/// The events the host records itself (README "Webhooks"); a plugin's
/// are `plugin.<plugin>.<name>`. `webhooks::event` names each, and a test
/// there keeps the two lists equal.
pub const WEBHOOK_EVENTS: [&str; 10] = [
    "session.connected",
    "session.disconnected",
    "room.entered",
    "room.exited",
    "room.occupied",
    "room.vacated",
    "seat.taken",
    "seat.freed",
    "call.started",
    "call.ended",
];

/// An `events` filter that can match something: an event of
/// [`WEBHOOK_EVENTS`], a plugin's `plugin.<plugin>.<name>`, or a prefix of
/// either ending in `*` (`*` alone: everything). A misspelt name (found in
/// review: `room.exit`) would otherwise start fine and match nothing.
fn is_event_filter(filter: &str) -> bool {
    let plugin_event = |name: &str| {
        name.strip_prefix("plugin.")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(plugin, event)| !plugin.is_empty() && !event.is_empty())
    };
    match filter.strip_suffix('*') {
        Some(prefix) => {
            WEBHOOK_EVENTS.iter().any(|e| e.starts_with(prefix))
                || "plugin.".starts_with(prefix)
                || prefix.starts_with("plugin.")
        }
        None => WEBHOOK_EVENTS.contains(&filter) || plugin_event(filter),
    }
}

/// Where events wait for their endpoints (`events.outbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxKind {
    /// An embedded database (redb) under `server.data_dir`: events
    /// survive a crash and a restart. The default.
    Disk,
    /// In memory: lost with the process. Only when the operator says so.
    Memory,
}

/// `[events]`: how events are kept (issue 16). With `store.url =
/// "redis://…"` events always live in a Redis stream and `outbox` is not
/// used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// `"disk"` (default) or `"memory"`, on a single node.
    pub outbox: OutboxKind,
    /// How long a room stays empty before `room.vacated` is sent (default
    /// 3 s); someone entering meanwhile cancels it and its
    /// `room.occupied`, so a quick reconnect does not flap.
    #[serde(with = "humantime_serde")]
    pub vacated_delay: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            outbox: OutboxKind::Disk,
            vacated_delay: Duration::from_secs(3),
        }
    }
}

/// Where an action may come from, as `[actions.<name>] sources` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionSource {
    /// A client's WebSocket frame.
    Client,
    /// `POST /api/v1/actions` from the app backend.
    Server,
    /// An event the host raises itself.
    System,
}

impl ActionSource {
    /// The name used in descriptions and logs (`client`, `server`,
    /// `system`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionSource::Client => "client",
            ActionSource::Server => "server",
            ActionSource::System => "system",
        }
    }
}

/// `[actions.<name>]`: what the operator allows of one action, whatever
/// its plugin declares. An action from a source the rule does not list is
/// refused exactly as one no plugin serves from that source (1007), before
/// any plugin runs; the rule narrows and never widens (a source the plugin
/// did not declare stays refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRule {
    /// The sources the action is accepted from.
    pub sources: Vec<ActionSource>,
}

impl ActionRule {
    /// The rules in force without configuration: `send_gift` only from
    /// the app backend (`sources = ["server"]`). A client-sent gift is a
    /// claim that something was paid for; the seed's clients only report
    /// gifts, and the backend, which took the payment, sends them. Allow
    /// `client` only with a `gift.toml` catalog (see README).
    pub fn defaults() -> HashMap<String, ActionRule> {
        HashMap::from([(
            "send_gift".to_string(),
            ActionRule {
                sources: vec![ActionSource::Server],
            },
        )])
    }

    /// Whether the rule accepts `source` (by its name).
    pub fn allows(&self, source: &str) -> bool {
        self.sources.iter().any(|s| s.as_str() == source)
    }
}

/// `[calls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// How long a call a client started may ring: if the callee has not
    /// answered (`call_answer`) by then, the host raises the system event
    /// `call_ring_timeout` and the call plugin ends the call, telling both
    /// sides with `hang_up`.
    #[serde(with = "humantime_serde")]
    pub ring_timeout: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            ring_timeout: Duration::from_secs(30),
        }
    }
}

/// `[recovery]`: the bounded history every room and user stream keeps so
/// that a client that reconnects gets what it missed (README, "Recovery
/// after a dropped link").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Notifications kept per stream (a room's, a user's), 1..=10000
    /// (default 200).
    pub history_size: usize,
    /// How long a notification is kept (default 120 s). A stream's epoch
    /// and seq are kept 24 hours (or this, if longer) after its last one.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Most members listed in a `room_state` frame (default 100; the
    /// frame's `member_count` is always the whole count).
    pub snapshot_members: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            history_size: 200,
            history_ttl: Duration::from_secs(120),
            snapshot_members: 100,
        }
    }
}

/// `[dev]`: aids for development and conformance testing. Every key here
/// is refused outside `--dev`, so no production configuration can turn
/// one on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevConfig {
    /// Echo every WebSocket message instead of running a session (see
    /// `http::conformance`), so Autobahn|Testsuite can test the
    /// WebSocket layer; the upgrade still needs a valid signed query.
    pub ws_echo: bool,
}

/// `[telemetry]`: where spans go besides the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP traces endpoint (for example
    /// `http://127.0.0.1:4318/v1/traces`); unset (the default): spans are
    /// not exported. Spans are batched and sent from a thread of their
    /// own; an unreachable collector costs dropped spans, never latency.
    pub otlp_endpoint: Option<String>,
}

/// `[demo]`: the demo room page and its credential-minting routes
/// (`host/src/http/demo.rs`). Off unless set, or `--dev` is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Serve `/demo/`; unset: on with `--dev`, off otherwise. Never turn it
    /// on in production: its routes mint credentials for any user.
    pub enabled: Option<bool>,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the WebSocket, `/iapi` and `/api/v1` listener.
    pub listen: SocketAddr,
    /// What `end_point` returns; defaults to `ws://<listen>`.
    pub public_url: Option<String>,
    /// Shared with the app backend; required outside `--dev`.
    pub app_secret: Option<String>,
    /// This node's name in presence and `GET /api/v1/users/{id}`; defaults
    /// to the listen address.
    pub node_id: Option<String>,
    /// The server's own folder (created owner-only): revoked sids of a
    /// single node survive restarts there. Unset: `$XDG_DATA_HOME/chorus`,
    /// else `$HOME/.local/share/chorus`, else `chorus-data` in the
    /// temporary directory.
    pub data_dir: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 9999).into(),
            public_url: None,
            app_secret: None,
            node_id: None,
            data_dir: None,
        }
    }
}

/// `[heartbeat]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// How often clients ping.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Silence after which a session is closed with 4000.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// How long a disconnected user keeps room, seat and call.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How long a TCP connection may take to send its HTTP request head.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(20),
            grace: Duration::ZERO,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// `[signing]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// Largest accepted difference between a timestamp and the server clock.
    #[serde(with = "humantime_serde")]
    pub max_skew: Duration,
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self {
            max_skew: Duration::from_secs(120),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest client message after reassembly; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Frames queued for one client; a client whose queue is full is
    /// closed with 4011 (slow consumer) so it never slows anyone else.
    pub outbound_queue: usize,
    /// Socket read buffer per connection, allocated when the connection
    /// opens and kept for its life (kept small: idle memory). The default,
    /// 512 bytes, holds a signed `ping` (about 300 bytes) in one read; a
    /// larger frame is read in several and grows that connection's buffer.
    pub read_buffer_bytes: usize,
    /// How long a write to a client may make no progress (the client does
    /// not read and its socket buffer is full) before the connection is
    /// closed with 4011. Meanwhile the session keeps reading, answering
    /// and watching its heartbeat.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Overrides of the bound of a string field, in bytes
    /// (`[limits.fields] content = 8192`); the defaults are
    /// `crate::bounds::FIELDS`. Over its bound a request gets 1001.
    pub fields: HashMap<String, usize>,
    /// The bound, in bytes, of a string field neither `limits.fields` nor
    /// `crate::bounds::FIELDS` names.
    pub string_bytes: usize,
    /// WebSockets this node holds at once, counting upgrades in flight;
    /// one more is refused at the upgrade with HTTP 503 and error 1008.
    /// 0 is no cap.
    pub max_connections: usize,
    /// WebSockets one client address holds at once (an IPv6 address counts
    /// by its /64); one more is refused like `max_connections`. 0 (the
    /// default) is no cap: behind a reverse proxy or a carrier's NAT many
    /// users share an address.
    pub max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 65536,
            outbound_queue: 256,
            read_buffer_bytes: 512,
            write_timeout: Duration::from_secs(10),
            fields: HashMap::new(),
            string_bytes: crate::bounds::OTHER_STRING_BYTES,
            max_connections: 100_000,
            max_connections_per_ip: 0,
        }
    }
}

impl LimitsConfig {
    /// The string bounds in force.
    pub fn bounds(&self) -> crate::bounds::Bounds {
        crate::bounds::Bounds::new(&self.fields, self.string_bytes)
    }

    /// Refuses a bound of 0 (every non-empty string would be refused) and
    /// a `[limits.fields]` name no field can have (empty, or longer than
    /// a field name may be), naming the key. A name outside
    /// `crate::bounds::FIELDS` is allowed: it may be a plugin's own field.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        if self.string_bytes == 0 {
            return Err(ConfigError::Invalid(
                "limits.string_bytes must be positive".into(),
            ));
        }
        let mut names: Vec<&String> = self.fields.keys().collect();
        names.sort();
        for name in names {
            if name.is_empty() || name.len() > crate::bounds::FIELD_NAME_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "limits.fields: {:?} is not a field name (1 to {} bytes)",
                    name,
                    crate::bounds::FIELD_NAME_BYTES
                )));
            }
            if self.fields[name] == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.fields.{name} must be positive"
                )));
            }
        }
        Ok(())
    }
}

/// `[plugins]`.
///
/// Not `deny_unknown_fields`: every key that is not one of these fields is
/// a plugin's own table (`[plugins.<name>]`, [`PluginObjectives`]), whose
/// fields are checked; a misspelt scalar key fails as a table that is not
/// one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginsConfig {
    /// Folder of `<name>.wasm` and `<name>.toml`, watched; unset: the
    /// bundled plugins only.
    pub dir: Option<PathBuf>,
    /// With `dir` set, also serve each bundled plugin no file of the
    /// folder replaces (a `<name>.wasm` of a bundled plugin's name does;
    /// removing it brings the bundled one back). False: only the folder's
    /// plugins serve. Without `dir` the bundled plugins always serve.
    pub bundled: bool,
    /// Deadline of one plugin call.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Memory cap of one plugin instance.
    pub max_memory: ByteSize,
    /// Where precompiled plugins are cached; unset: `plugin-cache` under
    /// the data folder (`server.data_dir`). Created owner-only (0700); the
    /// server refuses to start when another user could write to it or to
    /// a folder above it (sticky folders such as `/tmp` excepted). Holds
    /// `artifact.key`, the installation's key authenticating each artifact.
    pub cache_dir: Option<PathBuf>,
    /// Calls of one plugin version in flight at once; one more is answered
    /// 2002 at once instead of queueing.
    pub max_concurrent_calls: usize,
    /// Threads that may run plugin code at once; unset: the runtime's
    /// workers minus one (at least one), so guests never hold every worker.
    pub guest_parallelism: Option<usize>,
    /// Calls hitting `call_timeout` within `breaker_window` that trip a
    /// plugin version's circuit breaker; 0 turns the breaker off.
    pub breaker_threshold: u32,
    /// The window `breaker_threshold` is counted in.
    #[serde(with = "humantime_serde")]
    pub breaker_window: Duration,
    /// How long a tripped plugin's calls are answered 2002 at once.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Pending timers (contract 1.1 `set-timer`) one plugin may have, all
    /// rooms together (1..=1000000); one more fails that call with 2003.
    pub max_timers_per_plugin: u32,
    /// Pending timers naming one room, all plugins together
    /// (1..=1000000); one more fails that call with 2003.
    pub max_timers_per_room: u32,
    /// Re-runs of a call whose batch was refused as stale (a contract 1.1
    /// `kv-put` whose version changed since the call read it) before it
    /// fails with 2003 (0..=100).
    pub stale_retries: u32,
    /// Good compiled versions of each plugin kept for
    /// `POST /admin/plugins/{name}/activate` (1..=100, the serving one
    /// included; issue 18).
    pub keep_versions: usize,
    /// The share of rooms (0..=100, percent) a `<name>.canary.wasm` serves
    /// when it is staged; the admin API changes it per plugin.
    pub canary_percent: f64,
    /// When set, only `.wasm` files whose hex sha256 is listed load (the
    /// bundled plugins, part of the binary, always do); a refused file is
    /// reported like a broken one (`last_error`, `outcome: failed`).
    pub allowed_sha256: Option<Vec<String>>,
    /// Distinct series (metric name, kind and label set) one plugin may
    /// create through the contract 1.2 `metrics` import, all its versions
    /// together (1..=100000); a call that would create one more is
    /// dropped and counted in `chorus_plugin_metric_series_refused_total`.
    pub max_metric_series: usize,
    /// Count the fuel each plugin call consumes (wasmtime `consume_fuel`)
    /// for `chorus_plugin_fuel_per_call` and the admin `fuel_p50` and
    /// `fuel_p99`; costs CPU on every call (BENCHMARKS.md). Never a limit.
    pub meter_fuel: bool,
    /// Per-plugin rollout objectives, `[plugins.<name>]`: the automatic
    /// rollback of a canary or a newly live version (issue 18).
    #[serde(flatten, deserialize_with = "plugin_tables")]
    pub objectives: BTreeMap<String, PluginObjectives>,
}

/// The `[plugins.<name>]` tables among the keys of `[plugins]` that are
/// none of its fields: a key whose value is not a table is reported as an
/// unknown key of `[plugins]` (a misspelt `call_timeout`, say), a table's
/// own errors as they are.
fn plugin_tables<'de, D>(deserializer: D) -> Result<BTreeMap<String, PluginObjectives>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::{self, MapAccess, Visitor};

    /// A table, or anything else.
    enum Slot {
        Table(PluginObjectives),
        NotTable,
    }

    impl<'de> Deserialize<'de> for Slot {
        fn deserialize<D2: serde::Deserializer<'de>>(d: D2) -> Result<Self, D2::Error> {
            struct SlotVisitor;
            impl<'de> Visitor<'de> for SlotVisitor {
                type Value = Slot;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a [plugins.<name>] table")
                }
                fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Slot, M::Error> {
                    PluginObjectives::deserialize(de::value::MapAccessDeserializer::new(map))
                        .map(Slot::Table)
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Slot, E> {
                    Ok(Slot::NotTable)
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<Slot, E> {
                    Ok(Slot::NotTable)
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<Slot, E> {
                    Ok(Slot::NotTable)
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Slot, E> {
                    Ok(Slot::NotTable)
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<Slot, E> {
                    Ok(Slot::NotTable)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Slot, E> {
                    Ok(Slot::NotTable)
                }
                fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Slot, S::Error> {
                    while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                    Ok(Slot::NotTable)
                }
            }
            d.deserialize_any(SlotVisitor)
        }
    }

    struct Tables;
    impl<'de> Visitor<'de> for Tables {
        type Value = BTreeMap<String, PluginObjectives>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("[plugins.<name>] tables")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut tables = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                match map.next_value::<Slot>()? {
                    Slot::Table(objectives) => {
                        tables.insert(key, objectives);
                    }
                    Slot::NotTable => return Err(de::Error::unknown_field(&key, &[])),
                }
            }
            Ok(tables)
        }
    }
    deserializer.deserialize_map(Tables)
}

/// `[plugins.<name>]`: the objectives a canary or a newly live version of
/// plugin `<name>` must keep, or be rolled back by itself (issue 18).
///
/// Judged over the last `window` once it holds at least `min_calls` calls:
/// a failed call is one answered 2002 (a trap, a timeout, an exhausted
/// memory, an open breaker…); its p99 is broken when more than 1 % of the
/// window's calls took longer than `max_p99`. A canary is judged as long
/// as it is staged, a new live version for `probation` after it went live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginObjectives {
    /// The highest share of failed calls (0..=1); unset: not judged.
    pub max_error_rate: Option<f64>,
    /// The highest 99th percentile of a call's duration; unset: not judged.
    #[serde(with = "humantime_serde")]
    pub max_p99: Option<Duration>,
    /// The sliding window the objectives are judged over (default 30 s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Calls the window must hold before it is judged (default 20).
    pub min_calls: u64,
    /// How long a version that went live is judged (default 5 min).
    #[serde(with = "humantime_serde")]
    pub probation: Duration,
}

impl Default for PluginObjectives {
    fn default() -> Self {
        Self {
            max_error_rate: None,
            max_p99: None,
            window: Duration::from_secs(30),
            min_calls: 20,
            probation: Duration::from_secs(300),
        }
    }
}

impl PluginsConfig {
    /// Checks the rollout keys (issue 18): `keep_versions`,
    /// `canary_percent`, `allowed_sha256` and every `[plugins.<name>]`.
    fn validate_rollout(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(1..=100).contains(&self.keep_versions) {
            return invalid("plugins.keep_versions must be 1..=100".into());
        }
        if !(1..=100_000).contains(&self.max_metric_series) {
            return invalid("plugins.max_metric_series must be 1..=100000".into());
        }
        if !(0.0..=100.0).contains(&self.canary_percent) {
            return invalid("plugins.canary_percent must be 0..=100".into());
        }
        for sha in self.allowed_sha256.iter().flatten() {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(format!(
                    "plugins.allowed_sha256: {sha:?} is not a hex sha256 (64 digits)"
                ));
            }
        }
        for (name, o) in &self.objectives {
            let longest = o.window.max(o.probation).max(o.max_p99.unwrap_or_default());
            if longest > MAX_DURATION {
                return invalid(format!(
                    "plugins.{name}: durations must be at most 365 days"
                ));
            }
            if o.max_error_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                return invalid(format!("plugins.{name}.max_error_rate must be 0..=1"));
            }
            if o.max_p99.is_some_and(|d| d.is_zero())
                || o.window.is_zero()
                || o.min_calls == 0
                || o.probation.is_zero()
            {
                return invalid(format!(
                    "plugins.{name}: max_p99, window, min_calls and probation must be positive"
                ));
            }
        }
        Ok(())
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            bundled: true,
            call_timeout: Duration::from_millis(50),
            max_memory: ByteSize::mib(32),
            cache_dir: None,
            max_concurrent_calls: 64,
            guest_parallelism: None,
            breaker_threshold: 5,
            breaker_window: Duration::from_secs(10),
            breaker_cooldown: Duration::from_secs(30),
            max_timers_per_plugin: 10_000,
            max_timers_per_room: 100,
            stale_retries: 16,
            keep_versions: 5,
            canary_percent: 10.0,
            allowed_sha256: None,
            max_metric_series: 200,
            meter_fuel: true,
            objectives: BTreeMap::new(),
        }
    }
}

/// How a room notification reaches the room's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// To every connected member.
    Broadcast,
    /// To one delegate member, who relays it and reports back.
    Relay,
}

/// `[delivery]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// The mode of every room notification without an override.
    pub mode: DeliveryMode,
    /// Per-action overrides.
    pub actions: HashMap<String, DeliveryMode>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::Relay,
            actions: HashMap::new(),
        }
    }
}

impl DeliveryConfig {
    /// The mode for a notification of `action`: the plugin's `chosen` one
    /// (contract 1.1 `notify-via`), else the action's override, else
    /// `mode`. `room_notice` is always broadcast (it has no subject and no
    /// report), whatever was chosen.
    pub fn mode_for(&self, action: &str, chosen: Option<DeliveryMode>) -> DeliveryMode {
        if action == "room_notice" {
            return DeliveryMode::Broadcast;
        }
        chosen.unwrap_or_else(|| self.actions.get(action).copied().unwrap_or(self.mode))
    }
}

/// `[relay]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// How long a delegate has to report.
    #[serde(with = "humantime_serde")]
    pub report_timeout: Duration,
    /// Delegates tried per notification at most.
    pub max_attempts: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            report_timeout: Duration::from_secs(5),
            max_attempts: 3,
        }
    }
}

/// `[rooms]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Seats per room, ids 1..N.
    pub seats: u32,
    /// Bounds and lifetime of room attributes (`owner`, `admins`, …).
    pub attributes: AttributesConfig,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            seats: 9,
            attributes: AttributesConfig::default(),
        }
    }
}

/// `[rooms.attributes]`: per-room string key-values set by the app backend
/// (`POST /api/v1/rooms/attributes`) and by plugins (`set-room-attr`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributesConfig {
    /// Attributes one room may hold; one more is a conflict (2003).
    pub max_keys: usize,
    /// Longest attribute key, in bytes.
    pub max_key_bytes: usize,
    /// Longest attribute value, in bytes.
    pub max_value_bytes: usize,
    /// How long the attributes of a room nobody is in are kept after their
    /// last write or the last member leaving, whichever is later; while
    /// anyone is in the room they never expire.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Duration,
}

impl Default for AttributesConfig {
    fn default() -> Self {
        Self {
            max_keys: 32,
            max_key_bytes: 64,
            max_value_bytes: 1024,
            idle_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory://` (one node) or `redis://…` (several).
    pub url: String,
    /// Put before every Redis key and channel, so deployments (or tests)
    /// can share one Redis.
    pub prefix: String,
    /// How long a node's lease lives without renewal; a node silent for
    /// longer is dead and its users are removed by a survivor.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often a node renews its lease and looks for dead nodes.
    #[serde(with = "humantime_serde")]
    pub lease_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "memory://".into(),
            prefix: "chorus:".into(),
            lease_ttl: Duration::from_secs(10),
            lease_interval: Duration::from_secs(3),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener.
    pub listen: SocketAddr,
    /// Bearer token of the admin API; without one only `/healthz`,
    /// `/readyz` and `/metrics` answer.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 9998).into(),
            token: None,
        }
    }
}

/// The configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable did not parse. The message names the key and
    /// what was wrong, never the offending text: a config file may be a
    /// symlink to a file whose content must not reach a log.
    #[error("configuration: {0}")]
    Parse(String),
    /// A required key has no value.
    #[error("configuration: {0}")]
    Missing(&'static str),
    /// A value is out of range.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>, dev: bool) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            // Every key lives in a section, so a variable without `__` is
            // not configuration (e.g. CHORUS_PLUGIN_ARTIFACTS at build
            // time) and must not trip `deny_unknown_fields`.
            .merge(
                Env::prefixed("CHORUS_")
                    .filter(|key| key.as_str().contains("__"))
                    .split("__"),
            )
            .merge(
                Env::raw()
                    .only(&["CHORUS_APP_SECRET"])
                    .map(|_| "server.app_secret".into()),
            );
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe(e)))?;
        config.prepare(dev)?;
        Ok(config)
    }

    /// Fills the `--dev` defaults and checks what serde cannot; [`Config::load`]
    /// calls it, and so must code that builds a `Config` by hand.
    pub fn prepare(&mut self, dev: bool) -> Result<(), ConfigError> {
        if self.dev.ws_echo && !dev {
            return Err(ConfigError::Invalid(
                "dev.ws_echo replaces every session with an echo and is refused outside --dev"
                    .into(),
            ));
        }
        if dev {
            self.server
                .app_secret
                .get_or_insert_with(|| DEV_APP_SECRET.into());
            self.admin
                .token
                .get_or_insert_with(|| DEV_ADMIN_TOKEN.into());
            self.demo.enabled.get_or_insert(true);
        }
        match &self.server.app_secret {
            None => {
                return Err(ConfigError::Missing(
                    "server.app_secret (or CHORUS_APP_SECRET) is required outside --dev",
                ));
            }
            Some(s) if s.len() < 16 => {
                return Err(ConfigError::Invalid(
                    "server.app_secret must be at least 16 bytes".into(),
                ));
            }
            Some(_) => {}
        }
        if dev && !(self.server.listen.ip().is_loopback() && self.admin.listen.ip().is_loopback()) {
            return Err(ConfigError::Invalid(
                "--dev uses public secrets: server.listen and admin.listen must be loopback addresses"
                    .into(),
            ));
        }
        if self.admin.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid(
                "admin.token must be at least 16 bytes".into(),
            ));
        }
        if self.rooms.seats == 0 || self.rooms.seats > 64 {
            return Err(ConfigError::Invalid("rooms.seats must be 1..=64".into()));
        }
        let attributes = &self.rooms.attributes;
        if attributes.max_keys == 0
            || attributes.max_key_bytes == 0
            || attributes.max_value_bytes == 0
            || attributes.idle_ttl.is_zero()
        {
            return Err(ConfigError::Invalid(
                "rooms.attributes.max_keys, max_key_bytes, max_value_bytes and idle_ttl must be positive"
                    .into(),
            ));
        }
        if self.plugins.max_concurrent_calls == 0 || self.plugins.guest_parallelism == Some(0) {
            return Err(ConfigError::Invalid(
                "plugins.max_concurrent_calls and plugins.guest_parallelism must be positive"
                    .into(),
            ));
        }
        let timers = 1..=1_000_000;
        if !timers.contains(&self.plugins.max_timers_per_plugin)
            || !timers.contains(&self.plugins.max_timers_per_room)
        {
            return Err(ConfigError::Invalid(
                "plugins.max_timers_per_plugin and plugins.max_timers_per_room must be 1..=1000000"
                    .into(),
            ));
        }
        if !(1..=10_000).contains(&self.recovery.history_size) {
            return Err(ConfigError::Invalid(
                "recovery.history_size must be 1..=10000".into(),
            ));
        }
        if self.recovery.history_ttl.is_zero() {
            return Err(ConfigError::Invalid(
                "recovery.history_ttl must be more than 0s".into(),
            ));
        }
        if self.plugins.stale_retries > 100 {
            return Err(ConfigError::Invalid(
                "plugins.stale_retries must be 0..=100".into(),
            ));
        }
        self.plugins.validate_rollout()?;
        self.limits.check_bounds()?;
        if self.limits.outbound_queue == 0
            || self.relay.max_attempts == 0
            || self.limits.write_timeout.is_zero()
        {
            return Err(ConfigError::Invalid(
                "limits.outbound_queue, limits.write_timeout and relay.max_attempts must be positive"
                    .into(),
            ));
        }
        if self.calls.ring_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "calls.ring_timeout must be positive".into(),
            ));
        }
        if self.limits.max_frame_bytes == 0 || self.limits.read_buffer_bytes == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_frame_bytes and limits.read_buffer_bytes must be positive".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for endpoint in &self.webhooks {
            endpoint.check()?;
            if !names.insert(endpoint.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "webhooks {}: two endpoints have this name",
                    endpoint.name
                )));
            }
        }
        self.check_durations()
    }

    /// Every duration at most [`MAX_DURATION`]: the server adds and
    /// multiplies them (a call's deadline is ten times `call_timeout`, a
    /// nonce lives twice `max_skew`), and an absurd value must be refused
    /// here with its name rather than overflow later.
    fn check_durations(&self) -> Result<(), ConfigError> {
        match self.durations().iter().find(|(_, d)| *d > MAX_DURATION) {
            Some((key, d)) => Err(ConfigError::Invalid(format!(
                "{key} must be at most 365 days, not {d:?}"
            ))),
            None => Ok(()),
        }
    }

    /// Every duration key with its value. A test checks that no duration
    /// of the configuration is missing here (a longer one overflows
    /// `Instant + duration` where the server adds it to the clock).
    fn durations(&self) -> [(&'static str, Duration); 16] {
        [
            ("heartbeat.ping_interval", self.heartbeat.ping_interval),
            ("heartbeat.ping_timeout", self.heartbeat.ping_timeout),
            ("heartbeat.grace", self.heartbeat.grace),
            (
                "heartbeat.handshake_timeout",
                self.heartbeat.handshake_timeout,
            ),
            ("signing.max_skew", self.signing.max_skew),
            ("plugins.call_timeout", self.plugins.call_timeout),
            ("relay.report_timeout", self.relay.report_timeout),
            ("store.lease_ttl", self.store.lease_ttl),
            ("store.lease_interval", self.store.lease_interval),
            ("limits.write_timeout", self.limits.write_timeout),
            ("plugins.breaker_window", self.plugins.breaker_window),
            ("plugins.breaker_cooldown", self.plugins.breaker_cooldown),
            ("calls.ring_timeout", self.calls.ring_timeout),
            ("rooms.attributes.idle_ttl", self.rooms.attributes.idle_ttl),
            ("recovery.history_ttl", self.recovery.history_ttl),
            ("events.vacated_delay", self.events.vacated_delay),
        ]
    }

    /// The app secret's bytes (present after [`Config::load`]).
    pub fn app_secret(&self) -> &[u8] {
        self.server
            .app_secret
            .as_deref()
            .unwrap_or_default()
            .as_bytes()
    }

    /// This node's name: `server.node_id`, or the listen address when
    /// unset (presence, the cluster's lease and channels use it).
    pub fn node_id(&self) -> String {
        self.server
            .node_id
            .clone()
            .unwrap_or_else(|| self.server.listen.to_string())
    }

    /// The server's data folder (`server.data_dir` or its per-user
    /// default).
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.server.data_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/share"))
            });
        match base {
            Some(base) => base.join("chorus"),
            None => std::env::temp_dir().join("chorus-data"),
        }
    }

    /// The plugin artifact cache's folder: `plugins.cache_dir`, else
    /// `plugin-cache` under [`Config::data_dir`].
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.plugins
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("plugin-cache"))
    }

    /// Whether `/demo/` is served (`demo.enabled`, which `--dev` defaults
    /// to true).
    pub fn demo_enabled(&self) -> bool {
        self.demo.enabled.unwrap_or(false)
    }

    /// What `end_point` returns.
    pub fn public_url(&self) -> String {
        self.server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("ws://{}", self.server.listen))
    }
}

/// Describes a figment error by key and kind only, without the values or
/// the text it quotes (a TOML syntax error quotes the offending line).
fn describe(errors: figment::Error) -> String {
    use figment::error::Kind;
    let mut parts = Vec::new();
    for e in errors {
        let key = if e.path.is_empty() {
            "the file".to_string()
        } else {
            e.path.join(".")
        };
        let what = match &e.kind {
            Kind::Message(_) => "is not valid TOML or has a bad value".to_string(),
            Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => {
                format!("has the wrong type or value (expected {expected})")
            }
            Kind::InvalidLength(_, expected) => {
                format!("has the wrong length (expected {expected})")
            }
            Kind::UnknownVariant(_, _) => "is not one of the accepted values".to_string(),
            Kind::UnknownField(field, _) if field.len() <= 64 => {
                format!("has an unknown key {field:?}")
            }
            Kind::UnknownField(_, _) => "has an unknown key".to_string(),
            Kind::MissingField(field) => format!("misses the key {field:?}"),
            Kind::DuplicateField(field) => format!("repeats the key {field:?}"),
            _ => "has a value out of range or unsupported".to_string(),
        };
        let source = e
            .metadata
            .as_ref()
            .map(|m| format!(" ({})", m.name))
            .unwrap_or_default();
        parts.push(format!("{key} {what}{source}"));
    }
    parts.join("; ")
}

/// Whole seconds, rounded up, as the protocol shows durations to clients.
pub fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    //! Property tests (issue 19, item 2): any TOML file, valid or not,
    //! loads or fails with a typed [`ConfigError`], never a panic; a
    //! configuration that loads keeps the invariants `prepare` promises.
    //! (Arbitrary environment variables go through the binary, in
    //! `host/tests/cli.rs`: setting variables in this process is unsafe.)

    use std::io::Write as _;

    use proptest::prelude::*;

    use super::*;

    /// Every key of PROTOCOL section 11 and of the README, by section.
    const KEYS: &[(&str, &[&str])] = &[
        ("server", &["listen", "public_url", "app_secret", "node_id"]),
        (
            "heartbeat",
            &[
                "ping_interval",
                "ping_timeout",
                "grace",
                "handshake_timeout",
            ],
        ),
        ("signing", &["max_skew"]),
        (
            "limits",
            &[
                "max_frame_bytes",
                "outbound_queue",
                "read_buffer_bytes",
                "write_timeout",
                "string_bytes",
                "max_connections",
                "max_connections_per_ip",
            ],
        ),
        (
            "plugins",
            &[
                "dir",
                "call_timeout",
                "max_memory",
                "cache_dir",
                "max_concurrent_calls",
                "guest_parallelism",
                "breaker_threshold",
                "breaker_window",
                "breaker_cooldown",
            ],
        ),
        ("delivery", &["mode"]),
        ("relay", &["report_timeout", "max_attempts"]),
        (
            "rooms",
            // The generator picks among the first four keys of a section.
            &[
                "seats",
                "attributes.idle_ttl",
                "attributes.max_keys",
                "attributes.max_value_bytes",
            ],
        ),
        ("store", &["url", "prefix", "lease_ttl", "lease_interval"]),
        ("admin", &["listen", "token"]),
        ("dev", &["ws_echo"]),
        ("calls", &["ring_timeout"]),
        ("actions.send_gift", &["sources"]),
        ("unknown", &["key"]),
    ];

    /// A TOML value a user might write for any key: right, wrong, absurd.
    fn toml_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..100).prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            any::<bool>().prop_map(|b| b.to_string()),
            "-?[0-9]{1,25}(ns|ms|s|m|h|d|w|y|MiB|KiB|GiB|EiB|B|)".prop_map(|v| format!("{v:?}")),
            prop::sample::select(vec![
                "\"0s\"",
                "\"15s\"",
                "\"1ms\"",
                "\"18446744073709551615s\"",
                "\"relay\"",
                "\"broadcast\"",
                "\"memory://\"",
                "\"redis://\"",
                "\"127.0.0.1:0\"",
                "\"[::1]:99999\"",
                "\"chorus-reliability-secret\"",
                "[]",
                "[1, \"a\"]",
                "{}",
                "{ a = 1 }",
                "\"\"",
                "\"16EiB\"",
                "\"99999999999999999999999PiB\"",
                "nan",
                "inf",
                "-inf",
            ])
            .prop_map(str::to_owned),
            ".{0,16}".prop_map(|v| format!("{v:?}")),
        ]
    }

    /// A TOML document: sections of known and unknown keys with any value.
    fn toml_document() -> impl Strategy<Value = String> {
        let line = (0..KEYS.len(), 0usize..4, toml_value());
        prop::collection::vec(line, 0..12).prop_map(|lines| {
            let mut out = String::new();
            for (section, key, value) in lines {
                let (name, keys) = KEYS[section];
                let key = keys[key % keys.len()];
                out.push_str(&format!("[{name}]\n{key} = {value}\n"));
            }
            out
        })
    }

    /// Loads `text` as a configuration file.
    fn load_text(text: &[u8], dev: bool) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
        file.write_all(text).expect("write the temporary file");
        Config::load(Some(file.path()), dev)
    }

    /// `[[webhooks]]` and `[events]` load with their defaults, filters
    /// match names and prefixes, and a bad endpoint is refused by name.
    #[test]
    fn webhook_endpoints_load_and_are_checked() {
        let text = "[[webhooks]]\nname = \"backend\"\nurl = \"https://a.example/h?x=1\"\nsecret = \"0123456789abcdef\"\nevents = [\"seat.*\", \"room.exited\"]\n\n[events]\noutbox = \"memory\"\nvacated_delay = \"1s\"\n";
        let config = load_text(text.as_bytes(), true).expect("loads");
        let endpoint = &config.webhooks[0];
        assert_eq!(endpoint.batch_max, 20);
        assert_eq!(endpoint.batch_wait, Duration::from_millis(250));
        assert_eq!(endpoint.max_age, Duration::from_secs(24 * 3600));
        assert!(endpoint.wants("seat.freed") && endpoint.wants("room.exited"));
        assert!(!endpoint.wants("room.entered"));
        assert_eq!(config.events.outbox, OutboxKind::Memory);
        assert_eq!(config.events.vacated_delay, Duration::from_secs(1));
        for (bad, says) in [
            (
                "name = \"a b\"\nurl = \"http://a/\"\nsecret = \"0123456789abcdef\"",
                "webhooks.name",
            ),
            (
                "name = \"a\"\nurl = \"ftp://a/\"\nsecret = \"0123456789abcdef\"",
                "url must be http",
            ),
            // Review: these started and were retried for ever.
            (
                "name = \"a\"\nurl = \"http://a b/\"\nsecret = \"0123456789abcdef\"",
                "url is not a URL",
            ),
            (
                "name = \"a\"\nurl = \"http://a:99999/\"\nsecret = \"0123456789abcdef\"",
                "url is not a URL",
            ),
            (
                "name = \"a\"\nurl = \"http://\"\nsecret = \"0123456789abcdef\"",
                "url",
            ),
            // Review: a misspelt filter started and matched nothing.
            (
                "name = \"a\"\nurl = \"http://a/\"\nsecret = \"0123456789abcdef\"\nevents = [\"room.exit\"]",
                "room.exit",
            ),
            (
                "name = \"a\"\nurl = \"http://a/\"\nsecret = \"0123456789abcdef\"\nevents = [\"seats.*\"]",
                "seats.*",
            ),
            (
                "name = \"a\"\nurl = \"http://a/\"\nsecret = \"short\"",
                "secret must be",
            ),
            (
                "name = \"a\"\nurl = \"http://a/\"\nsecret = \"0123456789abcdef\"\nbatch_max = 0",
                "batch_max",
            ),
        ] {
            let text = format!("[[webhooks]]\n{bad}\n");
            let error = load_text(text.as_bytes(), true)
                .expect_err(&text)
                .to_string();
            assert!(error.contains(says), "{error}");
        }
        let twice =
            "[[webhooks]]\nname = \"a\"\nurl = \"http://a/\"\nsecret = \"0123456789abcdef\"\n"
                .repeat(2);
        let error = load_text(twice.as_bytes(), true)
            .expect_err("duplicate")
            .to_string();
        assert!(error.contains("two endpoints"), "{error}");
        for good in [
            "*",
            "seat.*",
            "room.*",
            "plugin.*",
            "plugin.gift.*",
            "plugin.gift.gift.sent",
        ] {
            assert!(is_event_filter(good), "{good}");
        }
        for bad in ["room.exit", "seats.*", "plugin.gift", "plugin.", "x*"] {
            assert!(!is_event_filter(bad), "{bad}");
        }
    }

    /// What `prepare` promises of a configuration that loaded.
    fn assert_invariants(config: &Config, dev: bool) -> Result<(), TestCaseError> {
        prop_assert!(
            config
                .server
                .app_secret
                .as_ref()
                .is_some_and(|s| s.len() >= 16)
        );
        prop_assert!(dev || !config.dev.ws_echo);
        prop_assert!((1..=64).contains(&config.rooms.seats));
        let attributes = &config.rooms.attributes;
        prop_assert!(attributes.max_keys > 0 && attributes.max_key_bytes > 0);
        prop_assert!(attributes.max_value_bytes > 0 && !attributes.idle_ttl.is_zero());
        prop_assert!(config.limits.outbound_queue > 0 && config.relay.max_attempts > 0);
        prop_assert!(config.limits.max_frame_bytes > 0 && config.limits.read_buffer_bytes > 0);
        prop_assert!(config.plugins.call_timeout <= MAX_DURATION);
        prop_assert!(config.signing.max_skew <= MAX_DURATION);
        // The sums the server makes with them cannot overflow.
        prop_assert!(config.plugins.call_timeout.checked_mul(10).is_some());
        prop_assert!(config.signing.max_skew.checked_mul(2).is_some());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Arbitrary bytes as a configuration file: a typed error or a
        /// configuration, never a panic.
        #[test]
        fn any_bytes_load_or_fail_typed(bytes in prop::collection::vec(any::<u8>(), 0..200), dev in any::<bool>()) {
            if let Ok(config) = load_text(&bytes, dev) {
                assert_invariants(&config, dev)?;
            }
        }

        /// TOML documents of the real keys with right, wrong and absurd
        /// values: a typed error or a configuration that keeps the
        /// invariants.
        #[test]
        fn any_toml_loads_or_fails_typed(text in toml_document(), dev in any::<bool>()) {
            match load_text(text.as_bytes(), dev) {
                Ok(config) => assert_invariants(&config, dev)?,
                Err(error) => prop_assert!(error.to_string().starts_with("configuration: ")),
            }
        }
    }

    /// Regression (issue 19, item 2; found reading what the server does
    /// with the values the property loads): durations so long that the
    /// server's sums with them overflow used to load, and would panic
    /// later (`call_timeout * 10` at plugin start, `max_skew * 2` on the
    /// first server-API request).
    #[test]
    fn absurd_durations_are_refused_by_name() {
        for (path, _) in Config::default().durations() {
            let (section, key) = path.split_once('.').expect("section.key");
            let text = format!("[{section}]\n{key} = \"18446744073709551615s\"\n");
            let error = load_text(text.as_bytes(), true).expect_err(&text);
            assert!(
                error
                    .to_string()
                    .contains(&format!("{section}.{key} must be at most 365 days")),
                "{error}"
            );
        }
        let text = "[signing]\nmax_skew = \"365d\"\n";
        assert!(load_text(text.as_bytes(), true).is_ok());
    }

    /// The conformance echo can never be turned on in production.
    #[test]
    fn the_ws_echo_is_refused_outside_dev() {
        let text = "[server]\napp_secret = \"0123456789abcdef\"\n[dev]\nws_echo = true\n";
        let error = load_text(text.as_bytes(), false).expect_err("refused");
        assert!(error.to_string().contains("outside --dev"), "{error}");
        assert!(load_text(text.as_bytes(), true).is_ok_and(|c| c.dev.ws_echo));
        assert!(!Config::default().dev.ws_echo);
    }

    /// Zero-sized buffers are refused: a zero read buffer reads nothing.
    #[test]
    fn timer_bounds_and_stale_retries_are_range_checked() {
        for (key, value, message) in [
            ("max_timers_per_plugin", "0", "must be 1..=1000000"),
            ("max_timers_per_room", "1000001", "must be 1..=1000000"),
            (
                "stale_retries",
                "101",
                "plugins.stale_retries must be 0..=100",
            ),
        ] {
            let text = format!("[plugins]\n{key} = {value}\n");
            let error = load_text(text.as_bytes(), true).expect_err(&text);
            assert!(error.to_string().contains(message), "{error}");
        }
        let text = b"[plugins]\nstale_retries = 0\nmax_timers_per_room = 1\n";
        let config = load_text(text, true).expect("in range");
        assert_eq!(config.plugins.stale_retries, 0);
    }

    #[test]
    fn rollout_keys_and_per_plugin_objectives_load_and_are_checked() {
        let text = b"[plugins]\nkeep_versions = 3\ncanary_percent = 20\n\
            allowed_sha256 = [\"ABab000000000000000000000000000000000000000000000000000000000000\"]\n\
            [plugins.gift]\nmax_error_rate = 0.01\nmax_p99 = \"20ms\"\nwindow = \"1m\"\n";
        let config = load_text(text, true).expect("valid");
        assert_eq!(config.plugins.keep_versions, 3);
        assert_eq!(config.plugins.canary_percent, 20.0);
        let gift = &config.plugins.objectives["gift"];
        assert_eq!(gift.max_error_rate, Some(0.01));
        assert_eq!(gift.max_p99, Some(Duration::from_millis(20)));
        assert_eq!(gift.window, Duration::from_secs(60));
        assert_eq!(gift.min_calls, 20, "the default");
        assert_eq!(config.plugins.objectives.len(), 1);
        for (text, message) in [
            (
                "[plugins]\nkeep_versions = 0\n",
                "plugins.keep_versions must be 1..=100",
            ),
            (
                "[plugins]\ncanary_percent = 101\n",
                "plugins.canary_percent must be 0..=100",
            ),
            (
                "[plugins]\nallowed_sha256 = [\"abc\"]\n",
                "is not a hex sha256",
            ),
            (
                "[plugins.gift]\nmax_error_rate = 2\n",
                "plugins.gift.max_error_rate must be 0..=1",
            ),
            ("[plugins.gift]\nmin_calls = 0\n", "must be positive"),
            ("[plugins.gift]\nwindow = \"400days\"\n", "at most 365 days"),
            ("[plugins.gift]\nmax_rate = 1\n", "unknown key \"max_rate\""),
            // A misspelt key of [plugins] is no plugin's table.
            ("[plugins]\ncall_timout = \"5s\"\n", "call_timout"),
        ] {
            let error = load_text(text.as_bytes(), true).expect_err(text);
            assert!(error.to_string().contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn zero_sized_limits_are_refused() {
        for key in ["max_frame_bytes", "read_buffer_bytes"] {
            let text = format!("[limits]\n{key} = 0\n");
            let error = load_text(text.as_bytes(), true).expect_err(&text);
            assert!(error.to_string().contains("must be positive"), "{error}");
        }
    }

    #[test]
    fn string_bounds_of_zero_or_on_no_field_name_are_refused_naming_the_key() {
        for (text, message) in [
            (
                "[limits]\nstring_bytes = 0\n",
                "limits.string_bytes must be positive",
            ),
            (
                "[limits.fields]\nnickname = 0\n",
                "limits.fields.nickname must be positive",
            ),
            (
                "[limits.fields]\n\"\" = 10\n",
                "limits.fields: \"\" is not a field name (1 to 64 bytes)",
            ),
        ] {
            let error = load_text(text.as_bytes(), true).expect_err(text);
            assert!(error.to_string().contains(message), "{error}");
        }
        let long = format!("[limits.fields]\n{} = 10\n", "f".repeat(65));
        let error = load_text(long.as_bytes(), true).expect_err(&long);
        assert!(error.to_string().contains("is not a field name"), "{error}");
        // A plugin's own field may be bounded.
        let text = b"[limits.fields]\ngift_note = 200\ncontent = 8192\n";
        let config = load_text(text, true).expect("valid bounds");
        assert_eq!(config.limits.bounds().max_bytes("gift_note"), 200);
    }

    #[test]
    fn a_config_error_never_quotes_the_file() {
        let secret_line = "root:$6$very-secret-hash:19000:0:99999:7:::";
        let err = load_text(secret_line.as_bytes(), true)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("very-secret-hash"), "{err}");
        let typed = "[server]\nlisten = \"secret-value-here\"\n";
        let err = load_text(typed.as_bytes(), true).unwrap_err().to_string();
        assert!(!err.contains("secret-value-here"), "{err}");
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn dev_refuses_a_listen_address_that_is_not_loopback() {
        let mut config = Config::default();
        config.server.listen = "0.0.0.0:9999".parse().unwrap();
        assert!(matches!(config.prepare(true), Err(ConfigError::Invalid(_))));
        let mut config = Config::default();
        assert!(config.prepare(true).is_ok());
    }

    #[test]
    fn a_short_admin_token_refuses_to_start() {
        for token in ["", "short-token"] {
            let mut config = Config::default();
            config.admin.token = Some(token.into());
            assert!(
                matches!(config.prepare(true), Err(ConfigError::Invalid(_))),
                "{token:?}"
            );
        }
    }

    /// Every duration of the configuration (any value that reads as a
    /// humantime duration when the defaults are serialized) is in
    /// `Config::durations`, so a new duration key cannot skip the bound.
    #[test]
    fn the_duration_list_names_every_duration_key() {
        fn walk(prefix: &str, value: &serde_json::Value, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&path, v, found);
                    }
                }
                serde_json::Value::String(s)
                    if humantime_serde::re::humantime::parse_duration(s).is_ok() =>
                {
                    found.push(prefix.to_string());
                }
                _ => {}
            }
        }
        let config = Config::default();
        let mut found = Vec::new();
        walk("", &serde_json::to_value(&config).unwrap(), &mut found);
        let listed: Vec<&str> = config.durations().iter().map(|(k, _)| *k).collect();
        for key in &found {
            assert!(
                listed.contains(&key.as_str()),
                "{key} is not in Config::durations"
            );
        }
        assert!(found.len() >= listed.len(), "{found:?}");
    }
}
