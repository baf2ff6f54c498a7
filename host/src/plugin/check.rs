//! What a plugin says about itself ([`Description`]), the rules a
//! description must follow, and [`check_file`] for `chorus plugin check`.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bindings::types;
use super::grants::Grants;
use super::host::config_json;
use super::runtime::Runtime;
use super::{PluginError, Settings, Source};
use crate::store::memory::MemoryStore;

/// A plugin's description of one version: its name, version and the
/// actions (and system events) it handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Description {
    /// Equals the file's stem.
    pub name: String,
    /// The plugin's own version string.
    pub version: String,
    /// Actions handled, each with the sources accepted, in the order the
    /// plugin listed them (an action listed twice is merged).
    pub actions: Vec<ActionSpec>,
}

/// One action a plugin handles, and from which sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionSpec {
    /// The action (or system event) name.
    pub name: String,
    /// The sources accepted, without repeats.
    pub sources: Vec<Source>,
}

impl Description {
    /// Whether this version handles `action` from `source`.
    pub fn accepts(&self, action: &str, source: Source) -> bool {
        self.actions
            .iter()
            .any(|a| a.name == action && a.sources.contains(&source))
    }

    /// The names of every action and system event handled.
    pub fn action_names(&self) -> Vec<String> {
        self.actions.iter().map(|a| a.name.clone()).collect()
    }

    /// Every (action, source) pair handled.
    pub(crate) fn claims(&self) -> impl Iterator<Item = (&str, Source)> {
        self.actions
            .iter()
            .flat_map(|a| a.sources.iter().map(move |s| (a.name.as_str(), *s)))
    }

    /// Converts the WIT record, merging repeated actions and sources.
    pub(crate) fn from_wit(description: types::Description) -> Self {
        let mut actions: Vec<ActionSpec> = Vec::new();
        for spec in description.actions {
            let index = match actions.iter().position(|a| a.name == spec.name) {
                Some(index) => index,
                None => {
                    actions.push(ActionSpec {
                        name: spec.name,
                        sources: Vec::new(),
                    });
                    actions.len() - 1
                }
            };
            for source in spec.sources.into_iter().map(Source::from) {
                if !actions[index].sources.contains(&source) {
                    actions[index].sources.push(source);
                }
            }
        }
        Self {
            name: description.name,
            version: description.version,
            actions,
        }
    }

    /// Checks the rules every version must follow: its name is the file's
    /// stem, it has a version, every action has a name and a source, and
    /// no action a client may send ends in `_report` (a client frame
    /// `<action>_report` is always taken as a relay report, so such an
    /// action could never reach the plugin).
    pub(crate) fn validate(&self, file_stem: &str) -> Result<(), PluginError> {
        if self.name != file_stem {
            return Err(PluginError::NameMismatch {
                file: file_stem.into(),
                described: self.name.clone(),
            });
        }
        if self.version.trim().is_empty() {
            return Err(PluginError::Describe("the version is empty".into()));
        }
        for action in &self.actions {
            if action.name.trim().is_empty() {
                return Err(PluginError::Describe("an action has an empty name".into()));
            }
            if action.sources.is_empty() {
                return Err(PluginError::Describe(format!(
                    "action {:?} lists no source",
                    action.name
                )));
            }
            if action.name.ends_with(REPORT_SUFFIX) && action.sources.contains(&Source::Client) {
                return Err(PluginError::Describe(format!(
                    "action {:?} from the client source cannot be served: a client frame whose \
                     action ends in `{REPORT_SUFFIX}` is always taken as a relay report",
                    action.name
                )));
            }
        }
        Ok(())
    }
}

impl From<types::Source> for Source {
    fn from(source: types::Source) -> Self {
        match source {
            types::Source::Client => Source::Client,
            types::Source::Server => Source::Server,
            types::Source::System => Source::System,
        }
    }
}

impl From<Source> for types::Source {
    fn from(source: Source) -> Self {
        match source {
            Source::Client => types::Source::Client,
            Source::Server => types::Source::Server,
            Source::System => types::Source::System,
        }
    }
}

/// Checks a plugin file the way the server would load it: compiles it,
/// links it against the `chorus:plugin` world, asks it to describe itself
/// (under the default deadline and memory cap) and checks the description,
/// including that its name is the file's stem.
///
/// Blocking; runs the plugin on a thread of its own, so it may be called
/// from inside or outside an async runtime.
pub fn check_file(path: &Path) -> Result<Description, PluginError> {
    let bytes = std::fs::read(path).map_err(|e| PluginError::Io {
        path: path.into(),
        message: e.to_string(),
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::thread::scope(|scope| {
        scope
            .spawn(|| check_bytes(&stem, &bytes))
            .join()
            .unwrap_or_else(|_| Err(PluginError::Describe("the check thread panicked".into())))
    })
}

/// The suffix of relay reports (`<action>_report`, PROTOCOL section 9).
const REPORT_SUFFIX: &str = "_report";

/// The grants the plugin at `path` would run with: the `[grants]` of the
/// `<name>.toml` beside it (the contract 1.0 set without a file or a
/// table). Errors: the file is not readable, not TOML, or its grants are
/// malformed.
pub fn check_grants(path: &Path) -> Result<Grants, PluginError> {
    let toml = path.with_extension("toml");
    let text = match std::fs::read_to_string(&toml) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(PluginError::Io {
                path: toml,
                message: e.to_string(),
            });
        }
    };
    let config = config_json(text.as_deref())?;
    Grants::from_config(&config)
}

/// Seats per room of the empty state a check runs against.
const CHECK_SEATS: u32 = 9;

/// Compile, link, describe and validate, on a current-thread runtime,
/// against an empty in-memory state.
fn check_bytes(stem: &str, bytes: &[u8]) -> Result<Description, PluginError> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| PluginError::Engine(e.to_string()))?;
    let runtime = Runtime::new(
        &Settings::default(),
        Arc::new(MemoryStore::new(CHECK_SEATS)),
        false,
    )?;
    let sha256 = hex::encode(Sha256::digest(bytes));
    let component = runtime.compile_blocking(stem, &sha256, bytes)?;
    let pre = runtime.link(&component)?;
    let description = tokio.block_on(runtime.describe(&pre, stem, "{}".into()))?;
    description.validate(stem)?;
    Ok(description)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description(action: &str, sources: &[Source]) -> Description {
        Description {
            name: "p".into(),
            version: "1".into(),
            actions: vec![ActionSpec {
                name: action.into(),
                sources: sources.to_vec(),
            }],
        }
    }

    /// A client frame `<x>_report` is always a relay report, so a plugin
    /// claiming such an action from clients is refused at load, clearly.
    #[test]
    fn a_client_action_ending_in_report_is_refused() {
        let error = description("gift_report", &[Source::Server, Source::Client])
            .validate("p")
            .expect_err("unreachable action");
        let text = error.to_string();
        assert!(
            text.contains("\"gift_report\"") && text.contains("relay report"),
            "{text}"
        );
        // From the app backend it is reachable, and allowed.
        description("gift_report", &[Source::Server])
            .validate("p")
            .expect("server only");
    }
}
