//! Hot reload of files that are versioned with the code (the template catalog, the access
//! policy): a poll for changes plus SIGHUP, which reloads at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// Calls `reload` whenever a file at or under `path` changes (checked every `every`) and on every
/// SIGHUP, until `stop` is cancelled. `reload` keeps the previous state when the new files are
/// broken.
pub fn watch<R>(every: Duration, stop: CancellationToken, path: PathBuf, reload: R)
where
    R: Fn() + Send + 'static,
{
    tokio::spawn(async move {
        let mut last = fingerprint(&path);
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let signal = async {
                match hangup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<()>();
            let forced = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => false,
                _ = signal => true,
            };
            let now = fingerprint(&path);
            if forced || now != last {
                last = now;
                reload();
            }
        }
    });
}

/// Names, sizes and modification times of `path` (a file) or of every file under it.
fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                for entry in std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                {
                    stack.push(entry.path());
                }
            }
            Ok(m) => out.push((p, m.len(), m.modified().ok())),
            Err(_) => {}
        }
    }
    out.sort();
    out
}
