//! The on-disk cache of precompiled components, and why its files can be
//! trusted (issue 21, item 1).
//!
//! Compiling a plugin with cranelift takes 55 to 95 ms; loading its
//! precompiled artifact takes about 70 µs. But loading one is wasmtime's
//! `unsafe` deserialization: the bytes become native code in the process
//! that holds `app_secret`. So the cache defends itself:
//!
//! - **Its folder** (`plugins.cache_dir`, default `plugin-cache` under
//!   `server.data_dir`) is created owner-only (0700). At start the folder
//!   must be owned by the server's user and writable by nobody else, and
//!   every folder above it owned by that user or root and writable by
//!   nobody else unless sticky (like `/tmp`); otherwise the runtime
//!   refuses to start ([`open_folder`]). The checks run on the canonical
//!   path, which is then the only one used, so a symlink cannot be swapped
//!   in later.
//! - **Every artifact is authenticated** before it is deserialized: the
//!   file is the artifact followed by an HMAC-SHA256 tag, keyed with a
//!   per-installation random key (`artifact.key` in the folder, 32 bytes,
//!   0600, created on first start), over the artifact's cache key (the
//!   sha256 of the `.wasm` bytes and the engine's compatibility hash) and
//!   its bytes. A file copied from another plugin's entry, or an artifact
//!   written by anyone without the key, fails the check; it is discarded
//!   (deleted), counted in `chorus_plugin_cache_discarded_total{plugin,
//!   reason}`, logged, and the `.wasm` is compiled again. The bytes checked
//!   are the bytes deserialized (read once into memory), so nothing can
//!   change between the check and the load.
//!
//! wasmtime's own cache (`Config::cache`, the `cache` feature) is not used:
//! it trusts whatever its folder holds (no authentication), chooses its
//! folder from the user's cache directory without checking who can write
//! it, and brings zstd, a TOML config file and a background cleanup
//! worker. What it would save here is about 150 lines.
//!
//! An artifact is keyed by the sha256 of the `.wasm` bytes and the
//! engine's compatibility hash (the wasmtime version and every setting that
//! changes code generation), so a host never picks up an artifact another
//! build could not run. A failure to write one only costs the next start a
//! compile.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginError;

/// The key file's name inside the cache folder.
pub const KEY_FILE: &str = "artifact.key";
/// Bytes of the key, and of the tag after each artifact.
const KEY_BYTES: usize = 32;
/// What the tag's MAC covers first: a fixed label, so the key can never
/// authenticate anything but an artifact of this format.
const TAG_LABEL: &[u8] = b"chorus-plugin-artifact-v1\0";

type HmacSha256 = Hmac<Sha256>;

/// Why a cached artifact was thrown away: the `reason` label of
/// `chorus_plugin_cache_discarded_total`, from this bounded set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Its tag is missing or does not match: not written by this
    /// installation for this `.wasm` and engine.
    Unauthenticated,
    /// It could not be read.
    Unreadable,
    /// Its tag matched but wasmtime refused it (another wasmtime wrote it
    /// with the same key, which a changed binary can do).
    Incompatible,
}

impl Discard {
    fn as_str(self) -> &'static str {
        match self {
            Discard::Unauthenticated => "unauthenticated",
            Discard::Unreadable => "unreadable",
            Discard::Incompatible => "incompatible",
        }
    }
}

/// The cache folder, this engine's compatibility key and the
/// installation's MAC key.
pub(crate) struct ArtifactCache {
    /// The canonical path of the folder, checked at open.
    dir: PathBuf,
    /// sha256 of the engine's compatibility hash.
    engine_key: [u8; 32],
    /// The per-installation key of every artifact's tag.
    mac_key: [u8; KEY_BYTES],
}

impl ArtifactCache {
    /// Opens the cache in `dir` for `engine`: creates the folder
    /// owner-only if missing, refuses one another user could write to (or
    /// whose parents another user could change), and reads the key, or
    /// creates it on first start.
    pub(crate) fn open(engine: &Engine, dir: &Path) -> Result<Self, PluginError> {
        let dir = open_folder(dir).map_err(|e| cache_error(dir, &e))?;
        let mac_key = load_or_create_key(&dir).map_err(|e| cache_error(&dir, &e))?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: hasher.0.finalize().into(),
            mac_key,
        })
    }

    /// The component for `bytes` (whose hex sha256 is `sha256`) of plugin
    /// `plugin` (named in log lines): from the cache when an authentic,
    /// usable artifact is there, else compiled and stored. Blocking: call
    /// it from `spawn_blocking`.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        plugin: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let key = self.key_for(sha256);
        let path = self.path_for(&key);
        match self.load(engine, &key, &path) {
            Ok(Some(component)) => return Ok(component),
            Ok(None) => {}
            Err(discard) => {
                metrics::counter!("chorus_plugin_cache_discarded_total",
                    "plugin" => plugin.to_string(), "reason" => discard.as_str())
                .increment(1);
                // The version is not known before `describe`.
                tracing::warn!(plugin, plugin_version = "unknown", path = %path.display(),
                    reason = discard.as_str(),
                    "discarded a cached plugin artifact; compiling the .wasm again");
                let _ = std::fs::remove_file(&path);
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) = self.store(&key, &path, &component) {
            tracing::warn!(plugin, plugin_version = "unknown", path = %path.display(),
                "could not cache a compiled plugin: {error:#}");
        }
        Ok(component)
    }

    /// The cache key of a `.wasm` for this engine.
    fn key_for(&self, sha256: &str) -> [u8; 32] {
        let mut key = Sha256::new();
        key.update(sha256.as_bytes());
        key.update(self.engine_key);
        key.finalize().into()
    }

    fn path_for(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hex::encode(key)))
    }

    /// The MAC of an artifact under its cache key.
    fn mac(&self, key: &[u8; 32], artifact: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.mac_key)
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(TAG_LABEL);
        mac.update(key);
        mac.update(artifact);
        mac
    }

    /// The artifact at `path`: `Ok(None)` when there is none, `Err` when
    /// one is there but must be discarded.
    fn load(
        &self,
        engine: &Engine,
        key: &[u8; 32],
        path: &Path,
    ) -> Result<Option<Component>, Discard> {
        let file = match std::fs::read(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(_) => return Err(Discard::Unreadable),
        };
        let Some(split) = file.len().checked_sub(KEY_BYTES) else {
            return Err(Discard::Unauthenticated);
        };
        let (artifact, tag) = file.split_at(split);
        // Constant-time comparison.
        self.mac(key, artifact)
            .verify_slice(tag)
            .map_err(|_| Discard::Unauthenticated)?;
        deserialize_authenticated(engine, artifact)
            .map(Some)
            .map_err(|_| Discard::Incompatible)
    }

    /// Writes the artifact and its tag through an owner-only temporary
    /// file and a rename, so no reader ever sees half an artifact.
    fn store(&self, key: &[u8; 32], path: &Path, component: &Component) -> wasmtime::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let artifact = component.serialize()?;
        let tag = self.mac(key, &artifact).finalize().into_bytes();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
        let written =
            write_private(&tmp, &[&artifact, &tag]).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(written?)
    }
}

/// Deserializes an artifact whose tag was just verified.
///
/// This is the only `unsafe` deserialization in the tree (`chorus plugin
/// check` and a cache-less runtime always compile), and its one caller
/// reaches it only after [`ArtifactCache::load`] checked the tag.
#[allow(unsafe_code)]
fn deserialize_authenticated(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts the bytes to be wasmtime's
    // own output. These bytes carry a valid HMAC-SHA256 tag under this
    // installation's secret key (readable only by the server's user, in a
    // folder only it can write), bound to this `.wasm` and this engine's
    // compatibility hash: only this host, compiling this `.wasm` with
    // `Component::serialize`, can have produced them. They are held in
    // memory, so what was checked is what is loaded. wasmtime still checks
    // the header and the engine settings and refuses a mismatch.
    unsafe { Component::deserialize(engine, artifact) }
}

/// The error for a cache folder or key that cannot be used.
fn cache_error(dir: &Path, reason: &str) -> PluginError {
    PluginError::Cache(format!("{}: {reason}", dir.display()))
}

/// Creates `dir` owner-only if missing and checks it and every folder
/// above it; returns its canonical path.
fn open_folder(dir: &Path) -> Result<PathBuf, String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create the folder: {e}"))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the folder: {e}"))?;
    #[cfg(unix)]
    ownership::check_tree(&dir)?;
    Ok(dir)
}

/// Reads the installation's key, or creates it (32 random bytes, 0600)
/// when absent. A key file another user could read or write, or of the
/// wrong size, is refused: the key is what makes artifacts trustworthy.
fn load_or_create_key(dir: &Path) -> Result<[u8; KEY_BYTES], String> {
    let path = dir.join(KEY_FILE);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => read_key(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(dir, &path),
        Err(e) => Err(format!("cannot read {KEY_FILE}: {e}")),
    }
}

fn read_key(path: &Path) -> Result<[u8; KEY_BYTES], String> {
    #[cfg(unix)]
    ownership::check_key(path)?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {KEY_FILE}: {e}"))?;
    <[u8; KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "{KEY_FILE} is {} bytes, not {KEY_BYTES}; delete it (every artifact is then compiled again)",
            bytes.len()
        )
    })
}

/// Writes a fresh key to a temporary file and hard-links it into place:
/// the link fails if another process created the key first (then that one
/// is read), and nobody ever reads a half-written key.
fn create_key(dir: &Path, path: &Path) -> Result<[u8; KEY_BYTES], String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let key: [u8; KEY_BYTES] = rand::rng().random();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{KEY_FILE}.tmp.{}.{n}", std::process::id()));
    write_private(&tmp, &[&key]).map_err(|e| format!("cannot write {KEY_FILE}: {e}"))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(path),
        Err(e) => Err(format!("cannot create {KEY_FILE}: {e}")),
    }
}

/// Creates `path` (which must not exist) readable and writable by the
/// owner only, writes `parts` and syncs it.
fn write_private(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()
}

/// Who may write where, on Unix.
#[cfg(unix)]
mod ownership {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    /// Group- or other-writable.
    const WRITABLE_BY_OTHERS: u32 = 0o022;
    /// Anything for group or other.
    const ANY_FOR_OTHERS: u32 = 0o077;
    /// The sticky bit: only an entry's owner may rename or delete it.
    const STICKY: u32 = 0o1000;

    /// The effective user id of this process.
    #[allow(unsafe_code)]
    fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
        unsafe { libc::geteuid() }
    }

    /// `dir` must be owned by this process's user and writable by nobody
    /// else; each folder above it owned by this user or root, and not
    /// writable by others unless sticky (then only the owner of `dir`'s
    /// ancestor entry could replace it, and that owner was just checked).
    pub(super) fn check_tree(dir: &Path) -> Result<(), String> {
        let me = euid();
        let meta = std::fs::metadata(dir).map_err(|e| format!("cannot inspect the folder: {e}"))?;
        let mode = meta.permissions().mode();
        if meta.uid() != me {
            return Err(format!(
                "the folder is owned by uid {}, not by the server's user (uid {me}); \
                 use a folder of the server's own (plugins.cache_dir)",
                meta.uid()
            ));
        }
        if mode & WRITABLE_BY_OTHERS != 0 {
            return Err(format!(
                "the folder is writable by other users (mode {:o}); make it owner-only \
                 (chmod 700) or choose another plugins.cache_dir",
                mode & 0o7777
            ));
        }
        for ancestor in dir.ancestors().skip(1) {
            check_ancestor(ancestor, me)?;
        }
        Ok(())
    }

    fn check_ancestor(path: &Path, me: u32) -> Result<(), String> {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        let mode = meta.permissions().mode();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "{} above it is owned by uid {}, neither the server's user nor root: \
                 that user could replace the folder",
                path.display(),
                meta.uid()
            ));
        }
        if mode & WRITABLE_BY_OTHERS != 0 && mode & STICKY == 0 {
            return Err(format!(
                "{} above it is writable by other users (mode {:o}): they could replace \
                 the folder",
                path.display(),
                mode & 0o7777
            ));
        }
        Ok(())
    }

    /// The key file must be a regular file of this user's, for nobody
    /// else.
    pub(super) fn check_key(path: &Path) -> Result<(), String> {
        let name = super::KEY_FILE;
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| format!("cannot inspect {name}: {e}"))?;
        let mode = meta.permissions().mode();
        if !meta.file_type().is_file() {
            return Err(format!("{name} is not a regular file"));
        }
        if meta.uid() != euid() {
            return Err(format!(
                "{name} is owned by uid {}, not the server's user",
                meta.uid()
            ));
        }
        if mode & ANY_FOR_OTHERS != 0 {
            return Err(format!(
                "{name} is accessible to other users (mode {:o}); it must be 600",
                mode & 0o7777
            ));
        }
        Ok(())
    }
}

/// Feeds `Hash` output into sha256, so the engine key is stable across
/// processes (std's `DefaultHasher` promises no such thing).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        // Only `write` is used: the digest is read from `self.0`.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
