//! `chorus plugin new`: writes a standalone plugin crate that builds for
//! `wasm32-wasip2` on the first try (issue 14 item 1).
//!
//! The crate depends on the SDK of the checkout this binary was built
//! from (by path), pins the same dependency versions (a copy of
//! `plugins/Cargo.lock`) and the same release profile, and builds into
//! the checkout's `plugins/target` (`.cargo/config.toml`), so the SDK's
//! dependencies already compiled for the bundled plugins are reused
//! rather than built again. It installs nothing: a missing wasm target is
//! reported with the one command to run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The target plugins are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The checkout this binary was built from.
pub fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the checkout")
        .to_path_buf()
}

/// Whether the active toolchain has the wasm target installed.
pub fn wasm_target_installed() -> bool {
    let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(WASM_TARGET)
        .exists()
}

/// The line telling the user how to get the wasm target.
pub fn missing_target_hint() -> String {
    format!("the {WASM_TARGET} target is not installed; run: rustup target add {WASM_TARGET}")
}

/// A plugin name: the file stem, the crate's lib name and the example
/// action, so `[a-z][a-z0-9_]*`, at most 64 bytes (an action's bound).
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        bail!(
            "`{name}` is not a plugin name: use a-z, 0-9 and _, starting with a letter, at most 64 bytes"
        );
    }
    // Names of the standard crates and Rust keywords: a lib of that name
    // does not build (or shadows `std`/`core`/`test` in the tests).
    const RESERVED: &[&str] = &[
        "std",
        "core",
        "alloc",
        "test",
        "proc_macro",
        "self",
        "super",
        "crate",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "static",
        "struct",
        "trait",
        "true",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "async",
        "await",
        "dyn",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "macro",
        "override",
        "priv",
        "typeof",
        "unsized",
        "virtual",
        "yield",
        "try",
        "gen",
    ];
    if RESERVED.contains(&name) {
        bail!("`{name}` is a Rust keyword or standard crate name: pick another plugin name");
    }
    Ok(())
}

/// The lib names the checkout's plugin workspace builds into
/// `plugins/target` (a new plugin of the same name would overwrite that
/// artifact there).
fn taken_names(plugins: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let folders = [plugins.to_path_buf(), plugins.join("fixtures")];
    for folder in folders {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = fs::read_to_string(entry.path().join("Cargo.toml")) else {
                continue;
            };
            let Ok(manifest) = text.parse::<toml::Table>() else {
                continue;
            };
            let lib = manifest
                .get("lib")
                .and_then(|l| l.get("name"))
                .and_then(|n| n.as_str());
            let package = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str());
            if let Some(name) = lib.or(package) {
                names.push(name.replace('-', "_"));
            }
        }
    }
    names
}

/// What `plugin new` wrote.
pub struct Created {
    /// The crate's folder.
    pub dir: PathBuf,
    /// Whether the wasm target is installed.
    pub target_installed: bool,
}

/// Writes the crate `<path>/<name>` against the SDK at `sdk` (default:
/// this checkout's `plugins/sdk`).
pub fn create(name: &str, path: &Path, sdk: Option<&Path>) -> anyhow::Result<Created> {
    check_name(name)?;
    let checkout = checkout();
    let plugins = checkout.join("plugins");
    let sdk = match sdk {
        Some(sdk) => sdk.to_path_buf(),
        None => plugins.join("sdk"),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the plugin SDK is not at {} (this binary was built from another checkout); \
             pass --sdk <checkout>/plugins/sdk",
            sdk.display()
        )
    })?;
    let shared = sdk.parent().map(Path::to_path_buf).unwrap_or(plugins);
    if taken_names(&shared).iter().any(|n| n == name) {
        bail!("`{name}` is the name of a bundled plugin or fixture; choose another");
    }
    let dir = path.join(name);
    if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    fs::create_dir_all(dir.join("src"))?;
    fs::create_dir_all(dir.join(".cargo"))?;
    let target_dir = shared.join("target");
    let grants_file = format!("{name}.toml");
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        (".cargo/config.toml", cargo_config(&target_dir)),
        (grants_file.as_str(), grants_toml(name)),
        ("src/lib.rs", lib_rs(name)),
        ("README.md", readme(name)),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        fs::write(dir.join(file), text).with_context(|| format!("writing {file}"))?;
    }
    // The versions the SDK was built and tested with.
    let lock = shared.join("Cargo.lock");
    if lock.exists() {
        fs::copy(&lock, dir.join("Cargo.lock")).context("copying Cargo.lock")?;
    }
    Ok(Created {
        dir,
        target_installed: wasm_target_installed(),
    })
}

/// The host's target triple (`rustc -vV`), if rustc answers.
fn host_triple() -> Option<String> {
    let out = Command::new("rustc").arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
}

/// `.cargo/config.toml`: the checkout's plugin build folder, and the host
/// triple as the default target, so `cargo test` shares the dependencies
/// the checkout's own plugin unit tests built (`scripts/test` runs them
/// with `--target <host>`) and `cargo build --target wasm32-wasip2` those
/// of the bundled plugins.
fn cargo_config(target_dir: &Path) -> String {
    let mut text = format!(
        "# Shares the Chorus checkout's plugin build folder, so the SDK's\n\
         # dependencies already built there are reused.\n\
         [build]\ntarget-dir = {:?}\n",
        target_dir.display().to_string()
    );
    if let Some(host) = host_triple() {
        text.push_str(&format!(
            "# `cargo test` runs natively; `chorus plugin dev` builds with\n\
             # --target {WASM_TARGET}.\ntarget = {host:?}\n"
        ));
    }
    text
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
chorus-plugin-sdk = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = {{ version = "1", features = ["preserve_order"] }}

# A crate of its own, wherever it sits.
[workspace]

# The bundled plugins' release profile: fast guest code (a call's guest
# work is most of the plugin path), and the same settings so their
# compiled dependencies are reused.
[profile.release]
opt-level = 3
lto = true
strip = true
codegen-units = 1
panic = "abort"
"#,
        sdk = sdk.display().to_string()
    )
}

fn grants_toml(name: &str) -> String {
    format!(
        r#"# What the `{name}` plugin may use (contract grants): effect groups
# (seats, calls, timers, notify-everyone, room-attributes, kv, events) and
# imports (room-state, profiles, kv, config, clock, log, metrics). Anything
# else fails the call with 2002. Copied beside `{name}.wasm` by
# `chorus plugin dev`.
[grants]
effects = []
imports = ["room-state", "config", "log"]

# The plugin's own settings follow, read with chorus_plugin_sdk::Config.
"#
    )
}

fn lib_rs(name: &str) -> String {
    format!(
        r#"//! The `{name}` plugin: one action, `{name}`, from clients and from the
//! app backend, answered with a notification to the user who sent it.

use chorus_plugin_sdk::Source::{{Client, Server}};
use chorus_plugin_sdk::event::acting;
use chorus_plugin_sdk::reply::{{notify_user, reply}};
use chorus_plugin_sdk::{{Error, Event, Reply, Router, payload}};
use serde::Deserialize;
use serde_json::json;

/// The text of the notification.
pub const GREETING: &str = "Hello from {name}";

/// The plugin's actions, each declared once: name, sources, handler.
fn router() -> Router {{
    Router::new("{name}", env!("CARGO_PKG_VERSION")).action("{name}", &[Client, Server], greet)
}}

chorus_plugin_sdk::plugin!(Component, router());

/// `{name}`'s payload, declared once: a missing required field is 1002, a
/// field of the wrong type 1001, each naming the field. Add yours here.
#[derive(Deserialize)]
struct Request {{
    /// The sender, from the app backend (a client's event is its own).
    user_id: Option<u64>,
}}

/// `{name}`: the sender (from the app backend: the payload's `user_id`)
/// gets `{{"action":"{name}","user_id":…,"text":GREETING}}`.
fn greet(event: &Event) -> Result<Reply, Error> {{
    let request: Request = payload::parse(&event.payload)?;
    let user_id = acting(event, request.user_id)?;
    let body = json!({{"action": "{name}", "user_id": user_id, "text": GREETING}});
    Ok(reply(
        json!({{"user_id": user_id}}),
        vec![notify_user(user_id, &body, Some(user_id))],
    ))
}}

#[cfg(test)]
mod tests {{
    use super::*;
    use chorus_plugin_sdk::Target;
    use chorus_plugin_sdk::testing::FakeHost;

    #[test]
    fn the_sender_gets_the_greeting() {{
        let mut host = FakeHost::new().online(7);
        // A client's event: user 7's connection sends the action.
        let done = host.client::<Component>(7, "{name}", json!({{}}));
        let sent = done.notifications();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].target, Target::User(7));
        assert_eq!(
            sent[0].body,
            json!({{"action": "{name}", "user_id": 7, "text": GREETING}})
        );
    }}

    #[test]
    fn the_app_backend_must_name_the_user() {{
        let mut host = FakeHost::new();
        assert_eq!(host.server::<Component>("{name}", json!({{}})).code(), 1002);
        let wrong = json!({{"user_id": "seven"}});
        assert_eq!(host.server::<Component>("{name}", wrong).code(), 1001);
    }}
}}
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        "# {name}: a Chorus plugin\n\
         Test: `cargo test` (handlers run on a fake host, no server needed).\n\
         Build: `cargo build --release --target wasm32-wasip2` (or `chorus plugin check` the `.wasm`).\n\
         Live: `chorus plugin dev . --server http://127.0.0.1:9090` (admin URL) rebuilds on save and swaps it into a running server.\n\
         Rules: src/lib.rs; grants: {name}.toml; guide: docs/plugins.md in the Chorus checkout.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("greeter_2").is_ok());
        for bad in ["", "2x", "Greeter", "a-b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
