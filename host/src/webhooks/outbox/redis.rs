//! [`RedisOutbox`]: the outbox of several nodes, one Redis stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Entry, Key, Outbox, OutboxError};
use crate::store::redis::RedisLink;
use crate::webhooks::event::Event;

/// How the Redis outbox reads an endpoint: first the entries this node
/// was handed and never acknowledged (after a takeover, those it
/// claimed), then new ones.
#[derive(Debug, Clone)]
struct Reading {
    /// Reading this consumer's pending entries, after this id.
    pending_after: Option<String>,
}

/// The several-node outbox: one Redis stream under `store.prefix`.
pub struct RedisOutbox {
    link: RedisLink,
    /// `P webhooks:events`.
    stream: String,
    /// This node's consumer name (`server.node_id`).
    consumer: String,
    /// Lease of an endpoint's delivery, in ms (`store.lease_ttl`).
    lease_ms: u64,
    /// Trim threshold: entries older than this many ms go on append.
    retention_ms: u64,
    /// Per endpoint, how it is being read.
    reading: Mutex<HashMap<String, Reading>>,
    /// Woken after every append of this node.
    appended: Arc<Notify>,
}

/// Reports a vacancy still pending with this number: `KEYS[1]` the
/// vacancy key, `KEYS[2]` the stream, `ARGV[1]` the room_seq, `ARGV[2]`
/// the event; 1 when appended.
const VACANCY_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
return 1
";

/// Takes or renews a lease: 1 renewed, 2 taken, 0 held by another.
const LEASE_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
";

impl RedisOutbox {
    /// The outbox on `link`, creating each endpoint's consumer group (at
    /// the stream's end, so a new endpoint starts with new events).
    pub async fn open(
        link: RedisLink,
        consumer: &str,
        endpoints: &[String],
        lease: std::time::Duration,
        retention: std::time::Duration,
        appended: Arc<Notify>,
    ) -> Result<Self, OutboxError> {
        let stream = link.key(crate::store::redis::EVENT_STREAM);
        for name in endpoints {
            let created: Result<(), _> = link
                .query(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(&stream)
                        .arg(name)
                        .arg("$")
                        .arg("MKSTREAM"),
                )
                .await;
            if let Err(e) = created
                && !e.to_string().contains("BUSYGROUP")
            {
                return Err(e.into());
            }
        }
        Ok(Self {
            link,
            stream,
            consumer: consumer.to_string(),
            lease_ms: lease.as_millis().max(1) as u64,
            retention_ms: retention.as_millis() as u64,
            reading: Mutex::default(),
            appended,
        })
    }

    /// Claims every entry of the endpoint's group pending with any
    /// consumer, so this node reads them again first.
    async fn claim_all(&self, endpoint: &str) -> Result<(), OutboxError> {
        let mut cursor = "0-0".to_string();
        for _ in 0..10_000 {
            let answer: redis::Value = self
                .link
                .query(
                    redis::cmd("XAUTOCLAIM")
                        .arg(&self.stream)
                        .arg(endpoint)
                        .arg(&self.consumer)
                        .arg(0)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(500)
                        .arg("JUSTID"),
                )
                .await?;
            let next = match &answer {
                redis::Value::Array(parts) => parts.first().and_then(value_string),
                _ => None,
            };
            match next {
                Some(n) if n != "0-0" => cursor = n,
                _ => break,
            }
        }
        Ok(())
    }

    fn reading(&self, endpoint: &str) -> Reading {
        let reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        reading.get(endpoint).cloned().unwrap_or(Reading {
            pending_after: Some("0".into()),
        })
    }

    fn set_reading(&self, endpoint: &str, r: Reading) {
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        reading.insert(endpoint.to_string(), r);
    }

    /// `XREADGROUP … STREAMS <stream> <from>`: entries as (id, json).
    async fn read_group(
        &self,
        endpoint: &str,
        max: usize,
        from: &str,
    ) -> Result<Vec<(String, String)>, OutboxError> {
        let answer: redis::Value = self
            .link
            .query(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(endpoint)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(max)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(from),
            )
            .await?;
        Ok(stream_entries(&answer))
    }
}

/// A bulk or simple string value as text.
fn value_string(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The `(id, e)` pairs of an `XREADGROUP` answer (RESP2 arrays or RESP3
/// maps), in order; entries whose fields are gone (deleted) are skipped.
fn stream_entries(answer: &redis::Value) -> Vec<(String, String)> {
    let streams: Vec<&redis::Value> = match answer {
        redis::Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                redis::Value::Array(pair) => pair.get(1),
                _ => None,
            })
            .collect(),
        redis::Value::Map(pairs) => pairs.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let redis::Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let redis::Value::Array(parts) = entry else {
                continue;
            };
            let (Some(id), Some(redis::Value::Array(fields))) =
                (parts.first().and_then(value_string), parts.get(1))
            else {
                continue;
            };
            if let Some(json) = fields.get(1).and_then(value_string) {
                out.push((id, json));
            }
        }
    }
    out
}

/// A field of `XINFO GROUPS` for one group, as a number.
fn group_field(group: &redis::Value, field: &str) -> Option<u64> {
    group_text(group, field)?.parse().ok()
}

/// A field of one `XINFO GROUPS` entry as text (`last-delivered-id`).
fn group_text(group: &redis::Value, field: &str) -> Option<String> {
    let pairs: Vec<(&redis::Value, &redis::Value)> = match group {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        redis::Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs
        .into_iter()
        .find(|(k, _)| value_string(k).as_deref() == Some(field))
        .and_then(|(_, v)| value_string(v))
}

/// A stream id `ms-seq` as a pair that orders like the stream.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[async_trait]
impl Outbox for RedisOutbox {
    async fn append(&self, events: &[Event]) -> Result<(), OutboxError> {
        let cutoff = crate::store::unix_ms().saturating_sub(self.retention_ms);
        let mut pipe = redis::pipe();
        for event in events {
            let json =
                serde_json::to_string(event).map_err(|e| OutboxError(format!("event: {e}")))?;
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("MINID")
                .arg("~")
                .arg(format!("{cutoff}-0"))
                .arg("*")
                .arg("e")
                .arg(json)
                .ignore();
        }
        self.link.query_pipe::<()>(&pipe).await?;
        self.appended.notify_waiters();
        Ok(())
    }

    async fn next(&self, endpoint: &str, max: usize) -> Result<Vec<Entry>, OutboxError> {
        let reading = self.reading(endpoint);
        let rows = match &reading.pending_after {
            Some(after) => {
                let rows = self.read_group(endpoint, max, after).await?;
                match rows.last() {
                    Some((id, _)) => {
                        self.set_reading(
                            endpoint,
                            Reading {
                                pending_after: Some(id.clone()),
                            },
                        );
                        rows
                    }
                    None => {
                        self.set_reading(
                            endpoint,
                            Reading {
                                pending_after: None,
                            },
                        );
                        self.read_group(endpoint, max, ">").await?
                    }
                }
            }
            None => self.read_group(endpoint, max, ">").await?,
        };
        Ok(rows
            .into_iter()
            .filter_map(|(id, json)| match serde_json::from_str(&json) {
                Ok(event) => Some(Entry {
                    key: Key::Stream(id),
                    event,
                    json,
                }),
                Err(e) => {
                    tracing::error!(id, error = %e, "a stream entry does not parse; skipped");
                    None
                }
            })
            .collect())
    }

    async fn ack(&self, endpoint: &str, entries: &[Entry]) -> Result<(), OutboxError> {
        let ids: Vec<&str> = entries
            .iter()
            .filter_map(|e| match &e.key {
                Key::Stream(id) => Some(id.as_str()),
                Key::Seq(_) => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.link
            .query::<()>(redis::cmd("XACK").arg(&self.stream).arg(endpoint).arg(ids))
            .await?;
        Ok(())
    }

    async fn rewind(&self, endpoint: &str, since_ms: u64) -> Result<(), OutboxError> {
        // The group's last-delivered id just before `since_ms`: new reads
        // (`>`) start at the first entry recorded at or after it.
        let id = if since_ms == 0 {
            "0-0".to_string()
        } else {
            format!("{}-0", since_ms - 1)
        };
        // Only ever back: moving the group past entries not yet delivered
        // would skip them (a `since` after the oldest undelivered event,
        // or in the future: found in review).
        let answer: redis::Value = self
            .link
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&self.stream))
            .await?;
        let current = match &answer {
            redis::Value::Array(groups) => groups
                .iter()
                .find(|g| group_text(g, "name").as_deref() == Some(endpoint))
                .and_then(|g| group_text(g, "last-delivered-id"))
                .and_then(|id| stream_id(&id)),
            _ => None,
        };
        if let (Some(current), Some(target)) = (current, stream_id(&id))
            && target >= current
        {
            return Ok(());
        }
        self.link
            .query::<()>(
                redis::cmd("XGROUP")
                    .arg("SETID")
                    .arg(&self.stream)
                    .arg(endpoint)
                    .arg(id),
            )
            .await?;
        self.set_reading(
            endpoint,
            Reading {
                pending_after: None,
            },
        );
        Ok(())
    }

    async fn depth(&self, endpoint: &str) -> Result<u64, OutboxError> {
        let answer: redis::Value = self
            .link
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&self.stream))
            .await?;
        let redis::Value::Array(groups) = answer else {
            return Ok(0);
        };
        for group in &groups {
            let name = match group {
                redis::Value::Array(items) => items
                    .chunks(2)
                    .find(|c| c.first().and_then(value_string).as_deref() == Some("name"))
                    .and_then(|c| c.get(1).and_then(value_string)),
                redis::Value::Map(pairs) => pairs
                    .iter()
                    .find(|(k, _)| value_string(k).as_deref() == Some("name"))
                    .and_then(|(_, v)| value_string(v)),
                _ => None,
            };
            if name.as_deref() == Some(endpoint) {
                let pending = group_field(group, "pending").unwrap_or(0);
                let lag = group_field(group, "lag").unwrap_or(0);
                return Ok(pending + lag);
            }
        }
        Ok(0)
    }

    async fn lead(&self, endpoint: &str) -> Result<bool, OutboxError> {
        let key = self.link.key(&format!("webhooks:lease:{endpoint}"));
        let held: i64 = self
            .link
            .query(
                redis::cmd("EVAL")
                    .arg(LEASE_LUA)
                    .arg(1)
                    .arg(key)
                    .arg(&self.consumer)
                    .arg(self.lease_ms),
            )
            .await?;
        if held == 2 {
            // A new term: what any earlier holder read and did not
            // acknowledge is this node's now, read first, in order.
            self.claim_all(endpoint).await?;
            self.set_reading(
                endpoint,
                Reading {
                    pending_after: Some("0".into()),
                },
            );
        }
        Ok(held != 0)
    }

    async fn prune(&self, _before_ms: u64) -> Result<(), OutboxError> {
        // Trimmed on every append (`XADD … MINID ~`).
        Ok(())
    }

    fn shares_vacancies(&self) -> bool {
        true
    }

    async fn report_vacancy(
        &self,
        channel: &str,
        room_seq: u64,
        event: &Event,
    ) -> Result<bool, OutboxError> {
        let json = serde_json::to_string(event).map_err(|e| OutboxError(format!("event: {e}")))?;
        let appended: i64 = self
            .link
            .query(
                redis::cmd("EVAL")
                    .arg(VACANCY_LUA)
                    .arg(2)
                    .arg(self.link.key(&format!("vacancy:{channel}")))
                    .arg(&self.stream)
                    .arg(room_seq)
                    .arg(json),
            )
            .await?;
        if appended == 1 {
            self.appended.notify_waiters();
        }
        Ok(appended == 1)
    }
}
