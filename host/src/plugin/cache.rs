//! The on-disk cache of precompiled components.
//!
//! Compiling a plugin with cranelift takes 55 to 95 ms; loading its
//! precompiled `.cwasm` takes about 70 µs. An artifact is keyed by the
//! sha256 of the `.wasm` bytes and the engine's compatibility hash (the
//! wasmtime version and every setting that changes code generation), so a
//! host never picks up an artifact another build could not run. A failure
//! to read an artifact is a miss; a failure to write one only costs the
//! next start a compile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The cache folder with this engine's compatibility key.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: [u8; 32],
}

impl ArtifactCache {
    /// A cache in `dir` (created on first write) for `engine`.
    pub(crate) fn new(engine: &Engine, dir: PathBuf) -> Self {
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_key: hasher.0.finalize().into(),
        }
    }

    /// The default folder: `chorus/plugin-cache` under the system's
    /// temporary directory.
    pub(crate) fn default_dir() -> PathBuf {
        std::env::temp_dir().join("chorus").join("plugin-cache")
    }

    /// The component for `bytes` (whose hex sha256 is `sha256`) of plugin
    /// `plugin` (named in log lines): from the cache when a usable artifact
    /// is there, else compiled and stored. Blocking: call it from
    /// `spawn_blocking`.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        plugin: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.path_for(sha256);
        if let Some(component) = load_artifact(engine, plugin, &path) {
            return Ok(component);
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) = self.store(&path, &component) {
            // The version is not known before `describe`.
            tracing::warn!(plugin, plugin_version = "unknown", path = %path.display(),
                "could not cache a compiled plugin: {error:#}");
        }
        Ok(component)
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        let mut key = Sha256::new();
        key.update(sha256.as_bytes());
        key.update(self.engine_key);
        self.dir
            .join(format!("{}.cwasm", hex::encode(key.finalize())))
    }

    /// Writes the artifact through a temporary file and a rename, so no
    /// reader ever sees half an artifact.
    fn store(&self, path: &Path, component: &Component) -> wasmtime::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bytes = component.serialize()?;
        std::fs::create_dir_all(&self.dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(())
    }
}

/// Loads a precompiled artifact; any failure is a miss.
#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, plugin: &str, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output
    // for this engine. This host only loads artifacts it wrote itself
    // (`ArtifactCache::store`, through a temporary file and an atomic
    // rename, so never half-written), in its own cache folder, under a name
    // that includes the engine's compatibility hash; wasmtime still checks
    // the header and the engine settings and refuses a mismatch, which is a
    // miss here.
    let loaded = unsafe { Component::deserialize_file(engine, path) };
    match loaded {
        Ok(component) => Some(component),
        Err(error) => {
            tracing::warn!(plugin, plugin_version = "unknown", path = %path.display(),
                "ignoring an unusable cached plugin: {error:#}");
            None
        }
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
