//! What can go wrong: a call ([`CallError`], with [`Failure`] when the
//! plugin broke rather than said no) and a load ([`PluginError`]).

use std::fmt;
use std::path::PathBuf;

use chorus_protocol::codes::ErrorCode;
use serde::Serialize;

/// Why a call produced no reply.
///
/// The first four are the plugin saying no (a WIT `error` variant): their
/// reason may be shown to the client. [`CallError::Failed`] is the plugin
/// breaking: it is logged with its detail, and the client only sees 2002.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A rule of the action failed (2001); the reason is shown.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The request conflicts with the state (2003).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The user may not do this (2004).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The payload is malformed (1001).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A required field is missing (1002).
    #[error("missing: {0}")]
    Missing(String),
    /// The plugin failed (2002); nothing was applied.
    #[error("plugin failed: {0}")]
    Failed(Failure),
}

impl CallError {
    /// The protocol's error code for this error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            CallError::Rejected(_) => ErrorCode::PluginRejected,
            CallError::Conflict(_) => ErrorCode::Conflict,
            CallError::NotAllowed(_) => ErrorCode::NotAllowed,
            CallError::Invalid(_) => ErrorCode::MalformedFrame,
            CallError::Missing(_) => ErrorCode::MissingField,
            CallError::Failed(_) => ErrorCode::PluginFailed,
        }
    }

    /// The numeric error code (2001, 2003, 2004, 1001 or 2002).
    pub fn code(&self) -> u16 {
        self.error_code().code()
    }

    /// The reason a client may see: the plugin's own words for a refusal,
    /// and nothing of a failure's detail.
    pub fn public_reason(&self) -> &str {
        match self {
            CallError::Rejected(r)
            | CallError::Conflict(r)
            | CallError::NotAllowed(r)
            | CallError::Invalid(r)
            | CallError::Missing(r) => r,
            CallError::Failed(f) => f.public.as_deref().unwrap_or("plugin failed"),
        }
    }
}

/// How a call failed (error 2002), with the detail for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Failure {
    /// Which way it broke.
    pub kind: FailureKind,
    /// What wasmtime or the checks said; for the log only.
    pub detail: String,
    /// What the caller may be told, when the failure is a bound of the
    /// contract or the operator's configuration rather than the plugin's
    /// internals (a timer delay out of range, a missing grant); `None`
    /// for every other failure, whose caller only sees 2002.
    pub public: Option<String>,
}

impl Failure {
    /// A failure of `kind` with `detail`, for the log only.
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            public: None,
        }
    }

    /// A failure whose `detail` the caller may see too.
    pub fn shown(kind: FailureKind, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            kind,
            public: Some(detail.clone()),
            detail,
        }
    }
}

/// The ways a call can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest trapped (a panic, `unreachable`, a bad memory access…).
    Trap,
    /// The call ran past `plugins.call_timeout`, the guest running in two
    /// or more of its epoch ticks: the plugin's own doing. Counted by the
    /// breaker.
    Timeout,
    /// The call ran past `plugins.call_timeout` while the guest itself ran
    /// in at most one epoch tick (10 ms) of it: the time went to waiting
    /// for a guest thread (`plugins.guest_parallelism`), for the CPU, or
    /// for the host. The node was too busy, not the plugin at fault: not
    /// counted by the breaker, so a burst (a reconnect storm, a starved
    /// machine) does not shut a plugin for `plugins.breaker_cooldown`.
    Starved,
    /// The guest's memory would have grown past `plugins.max_memory`.
    Memory,
    /// The reply was malformed: a notification body that is not a JSON
    /// object with a string `action`, a `result` that is not JSON, a timer
    /// outside the contract's bounds.
    MalformedEffect,
    /// An import could not read the state store.
    Store,
    /// No instance could be created (for example every instance slot of
    /// the pooling allocator is in use).
    Unavailable,
    /// The version already had `plugins.max_concurrent_calls` calls in
    /// flight; this one did not run.
    Overloaded,
    /// The version's circuit breaker is open (its calls kept hitting their
    /// deadline); this one did not run.
    BreakerOpen,
    /// The reply used an effect group, or the call an import, that the
    /// plugin's `[grants]` do not include (contract 1.1).
    Ungranted,
}

impl FailureKind {
    /// The label of `chorus_plugin_failures_total{kind}`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Starved => "starved",
            FailureKind::Memory => "memory",
            FailureKind::MalformedEffect => "malformed_effect",
            FailureKind::Store => "store",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Overloaded => "overloaded",
            FailureKind::BreakerOpen => "breaker_open",
            FailureKind::Ungranted => "ungranted",
        }
    }

    /// Whether a call that failed this way never ran the guest (too many
    /// in flight, an open breaker, no instance): the plugin neither saw
    /// the event nor refused it, so running it again later is safe.
    pub fn never_ran(self) -> bool {
        matches!(
            self,
            FailureKind::Overloaded | FailureKind::BreakerOpen | FailureKind::Unavailable
        )
    }

    /// Every kind, for registering metrics.
    pub(crate) const ALL: [FailureKind; 10] = [
        FailureKind::Trap,
        FailureKind::Timeout,
        FailureKind::Starved,
        FailureKind::Memory,
        FailureKind::MalformedEffect,
        FailureKind::Store,
        FailureKind::Unavailable,
        FailureKind::Overloaded,
        FailureKind::BreakerOpen,
        FailureKind::Ungranted,
    ];
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a plugin could not be loaded, reloaded or rolled back, or the
/// runtime could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The wasmtime engine could not be built.
    #[error("plugin engine: {0}")]
    Engine(String),
    /// A file could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        message: String,
    },
    /// The bytes are not a valid component.
    #[error("compile: {0}")]
    Compile(String),
    /// The component does not link against the `chorus:plugin` world.
    #[error("link: {0}")]
    Link(String),
    /// `describe` trapped, timed out or returned nonsense.
    #[error("describe: {0}")]
    Describe(String),
    /// The description names another plugin than the file.
    #[error("the plugin describes itself as {described:?}, but its file is {file:?}.wasm")]
    NameMismatch {
        /// The file's stem.
        file: String,
        /// The name the plugin gave.
        described: String,
    },
    /// Another loaded plugin already serves an action from that source.
    #[error("action {action:?} from {origin} is already served by plugin {owner:?}")]
    DuplicateAction {
        /// The action.
        action: String,
        /// The source both claim (not `source`: thiserror reserves that
        /// name for the underlying error).
        origin: &'static str,
        /// The plugin serving it.
        owner: String,
    },
    /// The artifact cache's folder or key cannot be trusted or used (the
    /// runtime refuses to start; see `plugins.cache_dir`).
    #[error("plugin cache {0}")]
    Cache(String),
    /// `<name>.toml` is not valid TOML.
    #[error("config: {0}")]
    Config(String),
    /// No plugin of that name is loaded.
    #[error("no plugin named {0:?}")]
    NotFound(String),
    /// The file's sha256 is not in `plugins.allowed_sha256`: it is
    /// refused like a broken file (issue 18).
    #[error("sha256 {0} is not in plugins.allowed_sha256")]
    NotAllowed(String),
    /// The plugin has no previous good version to roll back to.
    #[error("plugin {0:?} has no previous version to roll back to")]
    NoPrevious(String),
}
