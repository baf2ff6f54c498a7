//! Compiles the JavaScript SDK (`clients/js`) with its own `tsc` for the
//! demo room (`host/src/http/demo.rs`) and writes `demo_sdk.rs`, a table
//! of the compiled modules, into `OUT_DIR`.
//!
//! Why here and not a committed bundle: the demo must serve the SDK built
//! from the sources in this checkout, with no manual step and no
//! generated JavaScript in git. Everything lands in `OUT_DIR` (the
//! TypeScript compiler is installed there by `npm ci` from the SDK's own
//! lockfile, unless `clients/js/node_modules` already has it), so the
//! source tree is left as it was. Without Node and npm the server still
//! builds; the demo page then says the SDK is missing.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the SDK and writes the table (empty when the build failed).
pub fn build(root: &Path) {
    let sdk = root.join("clients/js");
    for input in ["src", "package.json", "package-lock.json", "tsconfig.json"] {
        println!("cargo:rerun-if-changed={}", sdk.join(input).display());
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let dist = out.join("sdk");
    let files = match compile(&sdk, &out, &dist) {
        Ok(()) => modules(&dist),
        Err(why) => {
            println!("cargo:warning=the demo room will lack the JavaScript SDK: {why}");
            Vec::new()
        }
    };
    let mut table = String::from(
        "/// The SDK's compiled modules: file name and text.\npub static SDK: &[(&str, &str)] = &[\n",
    );
    for (name, path) in files {
        writeln!(
            table,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");
    fs::write(out.join("demo_sdk.rs"), table).expect("OUT_DIR is writable");
}

/// Runs `tsc` on the SDK into `dist`.
fn compile(sdk: &Path, out: &Path, dist: &Path) -> Result<(), String> {
    let tsc = typescript(sdk, out)?;
    let _ = fs::remove_dir_all(dist);
    let status = Command::new(&tsc)
        .arg("-p")
        .arg(sdk.join("tsconfig.json"))
        .arg("--outDir")
        .arg(dist)
        .args(["--declaration", "false"])
        .status()
        .map_err(|e| format!("cannot run {}: {e}", tsc.display()))?;
    if !status.success() {
        return Err(format!("tsc failed ({status})"));
    }
    Ok(())
}

/// The SDK's own `tsc`: from `clients/js/node_modules` when a developer
/// installed it, else installed into `OUT_DIR` by `npm ci` (once per lockfile).
fn typescript(sdk: &Path, out: &Path) -> Result<PathBuf, String> {
    let local = sdk.join("node_modules/.bin/tsc");
    if local.exists() {
        return Ok(local);
    }
    let tools = out.join("sdk-tools");
    let tsc = tools.join("node_modules/.bin/tsc");
    let lock =
        fs::read(sdk.join("package-lock.json")).map_err(|e| format!("package-lock.json: {e}"))?;
    if tsc.exists() && fs::read(tools.join("package-lock.json")).ok().as_deref() == Some(&lock[..])
    {
        return Ok(tsc);
    }
    fs::create_dir_all(&tools).map_err(|e| e.to_string())?;
    fs::copy(sdk.join("package.json"), tools.join("package.json")).map_err(|e| e.to_string())?;
    fs::write(tools.join("package-lock.json"), &lock).map_err(|e| e.to_string())?;
    let status = Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(&tools)
        .status()
        .map_err(|e| format!("npm is not on PATH ({e}); install Node 20+ and npm"))?;
    if !status.success() || !tsc.exists() {
        return Err(format!("npm ci in {} failed ({status})", tools.display()));
    }
    Ok(tsc)
}

/// The `.js` files of `dist`, by name.
fn modules(dist: &Path) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = fs::read_dir(dist)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.ends_with(".js").then(|| (name, entry.path()))
        })
        .collect();
    files.sort();
    files
}
