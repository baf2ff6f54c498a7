//! Builds the bundled plugins (and the test fixtures beside them) from
//! source for `wasm32-wasip2`, so a fresh checkout needs no manual step, and
//! embeds the bundled ones into the binary.
//!
//! The plugins are a cargo workspace of their own (`plugins/`) with their
//! own target directory, so the nested cargo never waits on the lock of the
//! build that runs this script.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/sdk.rs"]
mod sdk;

/// The plugins the server loads when `plugins.dir` is not set.
const BUNDLED: &[&str] = &[
    "room",
    "seat",
    "gift",
    "chat",
    "call",
    "notice",
    "lucky_draw",
    "seat_invite",
];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root");
    let plugins = root.join("plugins");
    declare_inputs(root, &plugins);
    ensure_target();
    let artifacts = build_plugins(&plugins);
    embed(&artifacts);
    sdk::build(root);
    println!(
        "cargo:rustc-env=CHORUS_PLUGIN_ARTIFACTS={}",
        artifacts.display()
    );
}

/// Tells cargo which files rebuild the plugins; the plugins' own target
/// directory is left out, or every build would look stale.
fn declare_inputs(root: &Path, plugins: &Path) {
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.lock").display()
    );
    let mut stack = vec![plugins.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// Installs the wasm target when it is missing (a fresh machine has only
/// the host target, and `RUSTUP_AUTO_INSTALL=0` keeps rustup from doing it).
fn ensure_target() {
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .exists()
    {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .expect("rustup is on PATH to install the wasm32-wasip2 target");
    assert!(status.success(), "rustup target add {TARGET} failed");
}

/// Runs the nested cargo build and returns the folder holding the `.wasm`s.
fn build_plugins(plugins: &Path) -> PathBuf {
    let target_dir = plugins.join("target");
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the outer build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building the plugins for {TARGET} failed");
    target_dir.join(TARGET).join("release")
}

/// Copies the bundled plugins into OUT_DIR and writes `bundled.rs`, a table
/// of their names, bytes and `<name>.toml` (its `[grants]`, see
/// `plugins/<name>/<name>.toml`); each `.toml` is also copied beside the
/// `.wasm` in the artifacts folder, so copying that folder into
/// `plugins.dir` installs the plugins with their grants.
fn embed(artifacts: &Path) {
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let sources = artifacts
        .ancestors()
        .nth(3)
        .expect("the artifacts are plugins/target/<target>/release")
        .to_path_buf();
    let mut table = String::from(
        "/// The bundled plugins: name, `.wasm` bytes and `<name>.toml` text.\n\
         pub static BUNDLED: &[(&str, &[u8], &str)] = &[\n",
    );
    for name in BUNDLED {
        let src = artifacts.join(format!("{name}.wasm"));
        let dst = out.join(format!("{name}.wasm"));
        fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        let toml = sources.join(name).join(format!("{name}.toml"));
        fs::copy(&toml, artifacts.join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", toml.display()));
        writeln!(
            table,
            "    ({name:?}, include_bytes!({:?}), include_str!({:?})),",
            dst.display().to_string(),
            toml.display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");
    fs::write(out.join("bundled.rs"), table).expect("OUT_DIR is writable");
}
