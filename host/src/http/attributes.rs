//! `/api/v1/rooms/{channel_name}/attributes`: room attributes and roles
//! (contract 1.1, issue 13 item 4) for the app backend.
//!
//! `GET` answers the attributes with their version; `POST` changes them
//! as one batch of the store (all or nothing, with the same rules as a
//! plugin's `set-room-attr`):
//!
//! ```json
//! {"set":{"owner":"1233","title":"Friday"},"delete":["mode"],"clear":false,"if_version":7}
//! ```
//!
//! `clear` deletes every attribute first, then `delete`, then `set`;
//! `if_version` makes the whole request conditional on the version the
//! caller read. Both answer
//! `{"error_code":0,"error_reason":"","channel_name":…,"version":N,"attributes":{…}}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::HttpError;
use super::api::Signed;
use crate::app::App;
use crate::store::{
    ApplyError, AttrLimits, MAX_CHANNEL_NAME_BYTES, RoomAttrs, StateChange, check_room_attr,
};
use chorus_protocol::codes::ErrorCode;

/// `GET /api/v1/rooms/{channel_name}/attributes`: version 0 and `{}` for a
/// room that has none (whether or not anyone is in it).
pub async fn get(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    _: Signed,
) -> Result<Json<Value>, HttpError> {
    check_channel(&channel)?;
    let attrs = app.store.room_attrs(&channel).await?;
    Ok(Json(answer(&channel, &attrs)))
}

/// `POST /api/v1/rooms/{channel_name}/attributes`. Errors: 400 1001 for a
/// malformed body or an attribute out of its bounds (naming it), 400 1002
/// when nothing is asked, 409 2003 when `if_version` no longer holds or a
/// new key would pass `rooms.attributes.max_keys`, 503 2002 when the store
/// is down, 504 2005 when the write's answer never came (it may have been
/// applied). Nothing is changed on any other error. A write applied whose
/// state cannot be read back answers 200 with `version` and `attributes`
/// null.
pub async fn post(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    Signed(body): Signed,
) -> Result<Json<Value>, HttpError> {
    check_channel(&channel)?;
    let limits = AttrLimits::from_config(&app.config.rooms.attributes);
    let changes = Request::parse(&body)?.changes(&channel, &limits)?;
    {
        // Under the room's lock, as a plugin's write is: its
        // `room_attributes` takes the room's next `seq` in order.
        let _room = app.dispatch.room_locks().lock(&channel).await;
        app.store.apply(&changes).await.map_err(refused)?;
        app.dispatch.announce_room_attrs(&channel).await;
    }
    // The state after the write (and after any write that followed it):
    // its version is the one to name in the next `if_version`. The write
    // is applied whatever this read does: a failed read is still a
    // success, without the state (never 2002, "nothing was applied").
    match app.store.room_attrs(&channel).await {
        Ok(attrs) => Ok(Json(answer(&channel, &attrs))),
        Err(e) => {
            tracing::warn!(error = %e, channel, "room attributes written but not read back");
            Ok(Json(json!({
                "error_code": 0,
                "error_reason": "applied; the attributes could not be read back (state store unavailable): GET them before the next if_version",
                "channel_name": channel, "version": null, "attributes": null,
            })))
        }
    }
}

/// The answer of both routes.
fn answer(channel: &str, attrs: &RoomAttrs) -> Value {
    let entries: Map<String, Value> = attrs
        .entries
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "error_code": 0, "error_reason": "", "channel_name": channel,
        "version": attrs.version, "attributes": entries,
    })
}

fn check_channel(channel: &str) -> Result<(), HttpError> {
    if channel.is_empty() || channel.len() > MAX_CHANNEL_NAME_BYTES {
        return Err(invalid(format!(
            "channel_name must be 1 to {MAX_CHANNEL_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

fn invalid(reason: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::MalformedFrame, reason)
}

/// A refused batch as the server API answers it: the condition and the
/// bound are conflicts (409 2003) with the store's reason.
fn refused(error: ApplyError) -> HttpError {
    match error {
        ApplyError::Stale(reason) | ApplyError::Conflict(reason) => {
            HttpError::new(ErrorCode::Conflict, reason)
        }
        ApplyError::NotAllowed(reason) => HttpError::new(ErrorCode::NotAllowed, reason),
        ApplyError::Invalid(reason) => invalid(reason),
        // Never from an attributes batch (only disconnects carry the
        // condition), but a conflict if it were.
        back @ ApplyError::UserBack(_) => HttpError::new(ErrorCode::Conflict, back.to_string()),
        // A write whose answer never came: 2005, as an action gets.
        store @ ApplyError::Store(_) => crate::dispatch::ActionError::from(store).into(),
    }
}

/// A parsed `POST` body.
#[derive(Debug, Default)]
struct Request {
    set: Vec<(String, String)>,
    delete: Vec<String>,
    clear: bool,
    if_version: Option<u64>,
}

impl Request {
    /// Parses the body; every type error names its field.
    fn parse(body: &[u8]) -> Result<Self, HttpError> {
        let fields = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(invalid("the body must be a JSON object")),
            Err(e) => return Err(invalid(format!("the body is not JSON: {e}"))),
        };
        let mut request = Request::default();
        for (name, value) in fields {
            match (name.as_str(), value) {
                (_, Value::Null) => {}
                ("set", Value::Object(set)) => request.set = strings_of(set)?,
                ("set", _) => return Err(invalid("`set` must be an object of strings")),
                ("delete", Value::Array(keys)) => request.delete = keys_of(keys)?,
                ("delete", _) => return Err(invalid("`delete` must be an array of strings")),
                ("clear", Value::Bool(clear)) => request.clear = clear,
                ("clear", _) => return Err(invalid("`clear` must be true or false")),
                ("if_version", Value::Number(n)) if n.is_u64() => request.if_version = n.as_u64(),
                ("if_version", _) => {
                    return Err(invalid("`if_version` must be a non-negative integer"));
                }
                (other, _) => return Err(invalid(format!("unknown field `{other}`"))),
            }
        }
        if request.set.is_empty() && request.delete.is_empty() && !request.clear {
            return Err(HttpError::new(
                ErrorCode::MissingField,
                "one of `set`, `delete` or `clear` is required",
            ));
        }
        Ok(request)
    }

    /// The batch: `clear`, then the deletions, then the writes, each
    /// checked against the bounds and carrying the condition.
    fn changes(
        mut self,
        channel: &str,
        limits: &AttrLimits,
    ) -> Result<Vec<StateChange>, HttpError> {
        let delete = std::mem::take(&mut self.delete);
        let mut changes = Vec::with_capacity(self.set.len() + delete.len() + 1);
        if self.clear {
            changes.push(StateChange::ClearRoomAttrs {
                channel_name: channel.to_string(),
                if_version: self.if_version,
            });
        }
        for key in delete {
            if self.set.iter().any(|(k, _)| *k == key) {
                return Err(invalid(format!("`{key}` is both set and deleted")));
            }
            check_room_attr(limits, &key, None).map_err(invalid)?;
            changes.push(self.attr(channel, key, None));
        }
        for (key, value) in &self.set {
            check_room_attr(limits, key, Some(value)).map_err(invalid)?;
            changes.push(self.attr(channel, key.clone(), Some(value.clone())));
        }
        Ok(changes)
    }

    fn attr(&self, channel: &str, key: String, value: Option<String>) -> StateChange {
        StateChange::SetRoomAttr {
            channel_name: channel.to_string(),
            key,
            value,
            if_version: self.if_version,
        }
    }
}

/// `set`'s members, which must all be strings.
fn strings_of(set: Map<String, Value>) -> Result<Vec<(String, String)>, HttpError> {
    set.into_iter()
        .map(|(key, value)| match value {
            Value::String(value) => Ok((key, value)),
            _ => Err(invalid(format!("`set.{key}` must be a string"))),
        })
        .collect()
}

/// `delete`'s items, which must all be strings.
fn keys_of(keys: Vec<Value>) -> Result<Vec<String>, HttpError> {
    keys.into_iter()
        .enumerate()
        .map(|(index, key)| match key {
            Value::String(key) => Ok(key),
            _ => Err(invalid(format!("`delete[{index}]` must be a string"))),
        })
        .collect()
}
