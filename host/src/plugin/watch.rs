//! Hot reload: watches the plugin folder and rescans it when something in
//! it changes (PROTOCOL section 10).
//!
//! The folder is watched, not the files: replacing a file by renaming a
//! new one over it (the clean way to deploy) would end a watch on the old
//! file. Events are debounced: a file rewritten in place shows up two or
//! three times half-written, so the rescan waits until the folder has been
//! quiet for [`QUIET`] (but no longer than [`MAX_WAIT`] after the first
//! event). A rescan skips files whose content is unchanged and keeps the
//! serving version when a new one fails to load, so a half-written file
//! seen anyway costs one failed compile, not an outage.
//!
//! A plugin file may be a symlink to a file elsewhere (a deploy folder,
//! a mounted volume). Replacing the link's target outside the plugin
//! folder makes no event in the folder, so the folder of every link's
//! final target is watched as well, and these extra watches follow the
//! links after each rescan.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::host::PluginHost;

/// How long the folder must be quiet before a rescan.
pub(crate) const QUIET: Duration = Duration::from_millis(150);
/// The longest a rescan waits after the first event, however busy the
/// folder stays.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(1);

/// Starts watching `dir` and spawns the task that rescans it on `tracker`.
pub(crate) fn spawn(
    host: Arc<PluginHost>,
    dir: PathBuf,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    // One pending wake-up at most: a burst of events coalesces into one
    // rescan, and nothing queues without bound.
    let changed = Arc::new(Notify::new());
    let watcher = match start_watcher(&dir, Arc::clone(&changed)) {
        Ok(watcher) => watcher,
        Err(error) => {
            let dir = dir.display();
            tracing::error!(%dir, "cannot watch the plugin folder; hot reload is off: {error}");
            return;
        }
    };
    tracing::info!(dir = %dir.display(), "watching the plugin folder");
    tracker.spawn(async move {
        // The watcher stops when dropped: keep it for the task's life.
        let mut watcher = watcher;
        let mut targets = LinkTargets::default();
        targets.follow(&mut watcher, &dir);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = changed.notified() => {
                    if settle(&changed, &shutdown).await {
                        host.rescan(&dir, false).await;
                        targets.follow(&mut watcher, &dir);
                    }
                }
            }
        }
    });
}

/// The folders outside the plugin folder that hold the final targets of
/// its symlinks, each watched for as long as a link points into it.
#[derive(Default)]
struct LinkTargets {
    /// The folders watched now, besides the plugin folder.
    watched: BTreeSet<PathBuf>,
}

impl LinkTargets {
    /// Watches the target folder of every symlink now in `dir` and stops
    /// watching the folders no link points into any more.
    fn follow(&mut self, watcher: &mut impl Watcher, dir: &Path) {
        let wanted = link_target_folders(dir);
        for gone in self.watched.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        self.watched.retain(|folder| wanted.contains(folder));
        for folder in wanted {
            if self.watched.contains(&folder) {
                continue;
            }
            match watcher.watch(&folder, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(folder = %folder.display(), "watching a plugin symlink's target folder");
                    self.watched.insert(folder);
                }
                Err(error) => tracing::warn!(
                    folder = %folder.display(),
                    "cannot watch a plugin symlink's target folder; replacing its target needs a reload: {error}"
                ),
            }
        }
    }
}

/// The folders, other than `dir` itself, holding the final targets of the
/// symlinks in `dir` (a dangling link has none).
fn link_target_folders(dir: &Path) -> BTreeSet<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    let own = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_symlink()))
        .filter_map(|entry| std::fs::canonicalize(entry.path()).ok())
        .filter_map(|target| target.parent().map(Path::to_path_buf))
        .filter(|folder| *folder != own)
        .collect()
}

/// A watcher on `dir` that wakes `changed` for every event that may
/// concern a plugin file.
fn start_watcher(dir: &Path, changed: Arc<Notify>) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if concerns_plugins(&event) => changed.notify_one(),
            Ok(_) => {}
            Err(error) => tracing::warn!("plugin folder watcher: {error}"),
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether an event may change what a rescan finds: anything but a mere
/// read. Not filtered by file name: a folder swapped through a symlink (as
/// Kubernetes does with a ConfigMap) only shows events on the link, and a
/// needless rescan costs a hash of each file.
fn concerns_plugins(event: &notify::Event) -> bool {
    // The rescan itself reads the files: reacting to reads would loop.
    !matches!(event.kind, EventKind::Access(_))
}

/// Waits until no event came for [`QUIET`] or [`MAX_WAIT`] passed; false
/// on shutdown.
async fn settle(changed: &Notify, shutdown: &CancellationToken) -> bool {
    let give_up = Instant::now() + MAX_WAIT;
    loop {
        let quiet_until = (Instant::now() + QUIET).min(give_up);
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep_until(quiet_until) => return true,
            () = changed.notified() => {}
        }
    }
}
