//! `chorus plugin dev`: builds a plugin crate for `wasm32-wasip2`, puts it
//! into a running server's plugins folder (write, then rename, so the
//! server never reads half a file), and again on every save (issue 14
//! item 5). The server's hot reload (PROTOCOL section 10) takes it from
//! there: no restart, no dropped connection.
//!
//! `--server` is the plugins folder (`plugins.dir`) of a server on this
//! machine, or the server's admin URL (`http://127.0.0.1:9090`): then the
//! build is uploaded (`PUT /admin/plugins/{name}/toml`, then
//! `PUT /admin/plugins/{name}/wasm`), which the server writes into its own
//! plugins folder and loads at once, answering with the version that went
//! live or the load error. With a folder, `--admin <url>` asks the admin
//! listener (`GET /admin/plugins`) which version went live, or why the new
//! file failed to load, and prints that.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use super::new::{WASM_TARGET, missing_target_hint, wasm_target_installed};

/// Where a build goes and how to confirm it went live.
pub struct Options {
    /// The plugin crate's folder.
    pub crate_dir: PathBuf,
    /// Where the build goes: a plugins folder, or an admin URL.
    pub server: Server,
    /// The server's admin base URL (`http://127.0.0.1:9090`), to confirm.
    pub admin: Option<String>,
    /// Its bearer token (`admin.token`).
    pub admin_token: Option<String>,
    /// Build and install once, then exit (non-zero when it failed).
    pub once: bool,
}

/// Where `plugin dev` puts a build.
pub enum Server {
    /// A server's plugins folder (`plugins.dir`) on this machine.
    Folder(PathBuf),
    /// A server's admin base URL (`http://host:port`): uploaded.
    Admin(String),
}

impl Server {
    /// `http://…` is an admin URL; anything else a folder.
    pub fn parse(arg: &str) -> Self {
        if arg.starts_with("http://") || arg.starts_with("https://") {
            Server::Admin(arg.trim_end_matches('/').to_string())
        } else {
            Server::Folder(PathBuf::from(arg))
        }
    }
}

/// How long to wait for the server to report the new file.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Saves within this window make one rebuild.
const QUIET: Duration = Duration::from_millis(200);

/// Runs `plugin dev`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    if !wasm_target_installed() {
        bail!(missing_target_hint());
    }
    let crate_dir = options
        .crate_dir
        .canonicalize()
        .with_context(|| format!("no crate at {}", options.crate_dir.display()))?;
    match &options.server {
        Server::Folder(dir) if !dir.is_dir() => bail!(
            "{} is not a folder: pass the server's plugins folder (plugins.dir) or its admin URL \
             (http://…)",
            dir.display()
        ),
        Server::Admin(url) if url.starts_with("https://") => {
            bail!("plugin dev speaks plain HTTP to the admin listener: use http://")
        }
        _ => {}
    }
    let outcome = round(&crate_dir, options);
    if options.once {
        return outcome;
    }
    if let Err(error) = outcome {
        eprintln!("plugin dev: {error:#}");
    }
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    })?;
    watcher.watch(&crate_dir.join("src"), RecursiveMode::Recursive)?;
    watcher.watch(&crate_dir, RecursiveMode::NonRecursive)?;
    eprintln!(
        "plugin dev: watching {} (Ctrl-C to stop)",
        crate_dir.display()
    );
    loop {
        let first: notify::Result<notify::Event> = rx.recv()?;
        let mut relevant = first.is_ok_and(|e| is_source(&e));
        // Settle: one rebuild for a burst of saves.
        while let Ok(event) = rx.recv_timeout(QUIET) {
            relevant |= event.is_ok_and(|e| is_source(&e));
        }
        if relevant && let Err(error) = round(&crate_dir, options) {
            eprintln!("plugin dev: {error:#}");
        }
    }
}

/// A change to a source file, the manifest or the `<name>.toml` (not the
/// build's own output).
fn is_source(event: &notify::Event) -> bool {
    use notify::EventKind;
    matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    ) && event.paths.iter().any(|p| {
        let ext = p.extension().and_then(|e| e.to_str());
        !p.components().any(|c| c.as_os_str() == "target") && matches!(ext, Some("rs" | "toml"))
    })
}

/// One build and install; prints what went live.
fn round(crate_dir: &Path, options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let wasm = build(crate_dir)?;
    let name = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the artifact has no name")?
        .to_string();
    let bytes = fs::read(&wasm)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let toml = crate_dir.join(format!("{name}.toml"));
    let plugins_dir = match &options.server {
        Server::Admin(admin) => {
            let token = options.admin_token.as_deref();
            let version = upload(admin, token, &name, &toml, &bytes)?;
            eprintln!(
                "plugin dev: built and uploaded {name}.wasm ({} bytes, sha256 {}) in {:.1} s",
                bytes.len(),
                &sha256[..12],
                started.elapsed().as_secs_f64()
            );
            println!("live: {name} {version}");
            return Ok(());
        }
        Server::Folder(dir) => dir,
    };
    let before = options
        .admin
        .as_deref()
        .and_then(|admin| last_error(admin, options.admin_token.as_deref(), &name));
    // The config first: a new version must not start with the old grants.
    if toml.exists() {
        install(&fs::read(&toml)?, plugins_dir, &format!("{name}.toml"))?;
    }
    install(&bytes, plugins_dir, &format!("{name}.wasm"))?;
    eprintln!(
        "plugin dev: built and installed {name}.wasm ({} bytes, sha256 {}) in {:.1} s",
        bytes.len(),
        &sha256[..12],
        started.elapsed().as_secs_f64()
    );
    if let Some(admin) = &options.admin {
        let version = confirm(
            admin,
            options.admin_token.as_deref(),
            &name,
            &sha256,
            before.as_deref(),
        )?;
        println!("live: {name} {version}");
    } else {
        println!("installed: {name}");
    }
    Ok(())
}

/// `cargo build --release --target wasm32-wasip2` in the crate's folder
/// (so its `.cargo/config.toml` applies); the path of the `.wasm`.
fn build(crate_dir: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate_dir)
        .args(["build", "--release", "--target", WASM_TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    let out = cmd.output().context("running cargo")?;
    if !out.status.success() {
        bail!("the build failed (the server keeps the version it serves)");
    }
    let mut wasm = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let files = message["filenames"].as_array().cloned().unwrap_or_default();
        for file in files.iter().filter_map(|f| f.as_str()) {
            if file.ends_with(".wasm") && message["target"]["kind"][0] == "cdylib" {
                wasm = Some(PathBuf::from(file));
            }
        }
    }
    wasm.context("the build made no .wasm (is the crate a cdylib?)")
}

/// Writes `bytes` to a hidden temporary file in `dir`, then renames it to
/// `file`: the server sees the whole new file or the old one.
fn install(bytes: &[u8], dir: &Path, file: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, dir.join(file)).with_context(|| format!("installing {file}"))?;
    Ok(())
}

/// Uploads the config (when the crate has `<name>.toml`), then the
/// `.wasm`; the version the server says went live, or its refusal.
fn upload(
    admin: &str,
    token: Option<&str>,
    name: &str,
    toml: &Path,
    wasm: &[u8],
) -> anyhow::Result<String> {
    if toml.exists() {
        let path = format!("/admin/plugins/{name}/toml");
        let (status, body) = request(admin, "PUT", &path, token, &fs::read(toml)?)?;
        if status != 200 {
            bail!("the server refused {name}.toml: {}", refusal(status, &body));
        }
    }
    let path = format!("/admin/plugins/{name}/wasm");
    let (status, body) = request(admin, "PUT", &path, token, wasm)?;
    if status != 200 {
        bail!(
            "the server refused the new {name}.wasm: {}",
            refusal(status, &body)
        );
    }
    let version = body["outcome"]["version"]
        .as_str()
        .or_else(|| body["plugin"]["version"].as_str())
        .unwrap_or_default();
    Ok(version.to_string())
}

/// What an admin error answer says: its `error`, else the status; a
/// refused token says how to pass one.
fn refusal(status: u16, body: &serde_json::Value) -> String {
    let said = match body["error"].as_str() {
        Some(error) => error.to_string(),
        None => format!("HTTP {status}"),
    };
    if matches!(status, 401 | 403) {
        format!(
            "{said} (HTTP {status}): pass the server's admin.token with --admin-token or CHORUS_ADMIN__TOKEN"
        )
    } else {
        said
    }
}

/// The `last_error` the server reports for `name` now (`None` when it
/// reports none, or cannot be asked).
fn last_error(admin: &str, token: Option<&str>, name: &str) -> Option<String> {
    let listing = get_json(admin, "/admin/plugins", token).ok()?;
    let plugins = listing["plugins"].as_array()?.clone();
    let plugin = plugins.into_iter().find(|p| p["name"] == name)?;
    plugin["last_error"].as_str().map(str::to_string)
}

/// Polls `GET /admin/plugins` until `name` serves `sha256` (its version)
/// or reports a load error other than `before` (the new file failed; the
/// old version keeps serving).
fn confirm(
    admin: &str,
    token: Option<&str>,
    name: &str,
    sha256: &str,
    before: Option<&str>,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    loop {
        let answer = request(admin, "GET", "/admin/plugins", token, &[]);
        if let Ok((status @ (401 | 403), body)) = &answer {
            bail!("the admin API refused: {}", refusal(*status, body));
        }
        if let Ok((200, listing)) = answer {
            let plugins = listing["plugins"].as_array().cloned().unwrap_or_default();
            if let Some(p) = plugins.iter().find(|p| p["name"] == name) {
                let error = p["last_error"].as_str();
                if p["sha256"] == sha256 && p["status"] == "active" && error.is_none() {
                    return Ok(p["version"].as_str().unwrap_or_default().to_string());
                }
                if let Some(error) = error
                    && (p["sha256"] == sha256 || Some(error) != before)
                {
                    bail!("the server refused the new {name}.wasm: {error}");
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not load {name}.wasm within {CONFIRM_TIMEOUT:?}; \
                 is --server its plugins.dir?"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.1 GET of `path` on `base` (`http://host:port`) returning
/// the body as JSON; an answer other than 200 is an error.
pub fn get_json(base: &str, path: &str, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let (status, body) = request(base, "GET", path, token, &[])?;
    if status != 200 {
        bail!("GET {path}: HTTP {status}: {body}");
    }
    Ok(body)
}

/// One plain HTTP/1.1 request (`Connection: close`) of `method` on `path`
/// at `base` (`http://host:port`) with `body`: the status and the body as
/// JSON (`null` when it is not JSON).
fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, serde_json::Value)> {
    let authority = base
        .strip_prefix("http://")
        .context("the admin URL must start with http://")?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority)
        .with_context(|| format!("connecting to the admin listener at {base}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, serde_json::from_str(body).unwrap_or_default()))
}
