//! Revoked sids on a single node, kept on disk under `server.data_dir` so
//! a restart does not forget them (issue 21). With several nodes they live
//! in Redis instead (`cluster`), each until its own expiry.
//!
//! A plain text file (`revoked-sids`, one `<expires_at> <sid>` per line)
//! written whole to a temporary file, synced and renamed over the old one,
//! rather than an embedded database: revocations are rare and few (each
//! lives only until its sid expires), the whole set is rewritten in
//! microseconds, a rename is atomic on every filesystem the server runs
//! on, and the file stays readable by an operator. An embedded store
//! (redb, sled) would add a dependency and a format for a few hundred
//! lines at most.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name under the data folder.
pub const FILE_NAME: &str = "revoked-sids";

/// Revoked sids and their expiries (unix seconds).
#[derive(Debug, Default, Clone)]
pub struct Revoked {
    /// sid → its `expires_at`.
    sids: HashMap<String, u64>,
}

/// The revocation file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The file or its folder could not be read or written.
    #[error("revoked sids at {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A line is not `<expires_at> <sid>` (the line is not quoted: it
    /// holds a credential).
    #[error("revoked sids at {path}: line {line} is malformed")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
}

impl Revoked {
    /// Refuses `sid` until `expires_at`; drops entries expired at `now`.
    pub fn insert(&mut self, sid: &str, expires_at: u64, now: u64) {
        self.sids.retain(|_, e| *e >= now);
        if expires_at >= now {
            self.sids.insert(sid.to_string(), expires_at);
        }
    }

    /// Whether `sid` is revoked and not yet expired at `now`.
    pub fn contains(&self, sid: &str, now: u64) -> bool {
        self.sids.get(sid).is_some_and(|e| *e >= now)
    }

    /// How many sids are remembered.
    pub fn len(&self) -> usize {
        self.sids.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.sids.is_empty()
    }

    /// Reads `dir/revoked-sids`, dropping entries expired at `now`; an
    /// absent file is an empty set.
    pub fn load(dir: &Path, now: u64) -> Result<Self, RevocationError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(RevocationError::Io { path, source }),
        };
        let mut revoked = Self::default();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let parsed = line
                .split_once(' ')
                .and_then(|(e, sid)| Some((e.parse::<u64>().ok()?, sid)));
            let Some((expires_at, sid)) = parsed else {
                return Err(RevocationError::Malformed { path, line: i + 1 });
            };
            revoked.insert(sid, expires_at, now);
        }
        Ok(revoked)
    }

    /// Writes the set to `dir/revoked-sids` atomically: a temporary file
    /// (owner-only permissions), synced, renamed over the old one.
    pub fn save(&self, dir: &Path) -> Result<(), RevocationError> {
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RevocationError::Io { path, source }
        };
        let mut text = String::new();
        for (sid, expires_at) in &self.sids {
            text.push_str(&format!("{expires_at} {sid}\n"));
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }
}

/// Creates `dir` (and its parents) with owner-only permissions if missing.
pub fn create_data_dir(dir: &Path) -> Result<(), RevocationError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| RevocationError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_revocations_load_back_without_the_expired() {
        let dir = std::env::temp_dir().join(format!("chorus-revoked-{}", std::process::id()));
        create_data_dir(&dir).unwrap();
        let mut r = Revoked::default();
        r.insert("1.200.a.mac", 200, 100);
        r.insert("1.150.b.mac", 150, 100);
        r.save(&dir).unwrap();
        let back = Revoked::load(&dir, 160).unwrap();
        assert!(back.contains("1.200.a.mac", 160));
        assert!(!back.contains("1.150.b.mac", 160));
        assert_eq!(back.len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}
