//! The write-ahead log: every accepted batch is appended and fsynced before the gateway answers 2xx.
//!
//! Layout: `<wal_dir>/<segment id, 20 digits>.wal`, each file a magic header followed by records
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, a payload being one batch
//! (postcard-encoded [`WalBatch`]). Appends from concurrent requests are grouped: one write and one
//! `fdatasync` acknowledge all of them (group commit).
//!
//! Segment ids are `creation time in ms << 16 | node tag`, so they grow across restarts and differ
//! between gateways sharing a ClickHouse. Rows carry their segment id into ClickHouse
//! (`events.ingest_segment`); the retirer (see `writer.rs`) deletes a segment only once ClickHouse
//! holds every one of its rows in `events` itself, past the Buffer table.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::row::{EventRow, UserPropertiesRow};

const MAGIC: &[u8; 8] = b"CHGWAL1\n";
const RECORD_HEADER: usize = 8;
/// Bytes of a row's postcard encoding besides its text: the length prefixes of its strings and
/// its fixed-size fields, rounded up.
const ROW_OVERHEAD: usize = 128;
/// Most appends acknowledged by one fsync.
const MAX_GROUP: usize = 4096;
/// How long a commit waits for more appends when the previous one acknowledged several.
const COMMIT_DELAY: Duration = Duration::from_micros(1000);

/// One accepted batch, as logged and as replayed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WalBatch {
    pub rows: Vec<EventRow>,
    pub users: Vec<UserPropertiesRow>,
}

impl WalBatch {
    /// Memory the batch's rows take while they are held: each row's fields and its text.
    pub fn memory_bytes(&self) -> usize {
        self.rows
            .iter()
            .map(|r| std::mem::size_of::<EventRow>() + r.text_len())
            .sum::<usize>()
            + self
                .users
                .iter()
                .map(|u| std::mem::size_of_val(u) + u.user_id.len() + u.traits.len())
                .sum::<usize>()
    }

    pub fn encode(&self) -> anyhow::Result<Vec<u8>> {
        // Sized up front: grown from empty, the buffer would be copied at every doubling.
        let text: usize = self.rows.iter().map(EventRow::text_len).sum::<usize>()
            + self
                .users
                .iter()
                .map(|u| u.user_id.len() + u.traits.len() + 16)
                .sum::<usize>();
        let hint = text + self.rows.len() * ROW_OVERHEAD + 16;
        postcard::to_extend(self, Vec::with_capacity(hint)).context("cannot encode batch")
    }
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("the write-ahead log holds {bytes} bytes, its limit is {limit}; ClickHouse is behind or down")]
    Full { bytes: u64, limit: u64 },
    #[error("write-ahead log I/O failed: {0}")]
    Io(String),
    #[error("the write-ahead log is shut down")]
    Closed,
}

/// Bookkeeping of one segment.
#[derive(Debug)]
pub struct Segment {
    pub id: u64,
    pub path: PathBuf,
    pub bytes: u64,
    /// Event rows appended (acknowledged) to this segment.
    pub rows: u64,
    /// Event rows ClickHouse accepted (into the Buffer table) so far.
    pub inserted: u64,
    /// No more appends; eligible for retirement once verified.
    pub sealed: bool,
    /// Found on disk at start-up: its rows must be replayed (those ClickHouse lacks).
    pub needs_replay: bool,
    pub created: Instant,
    pub last_insert: Instant,
    /// Last verification that found rows missing: (rows found, when).
    pub short: Option<(u64, Instant)>,
}

struct Active {
    id: u64,
    file: File,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    active: Option<Active>,
    total_bytes: u64,
    last_id: u64,
}

struct AppendRequest {
    payload: Vec<u8>,
    rows: u64,
    reply: oneshot::Sender<Result<u64, WalError>>,
}

/// Handle on the log; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
    tx: mpsc::Sender<AppendRequest>,
}

struct Inner {
    /// `events` or `postgres`: the `wal` label of the metrics.
    label: &'static str,
    dir: PathBuf,
    node_tag: u64,
    max_bytes: u64,
    segment_bytes: u64,
    segment_age: Duration,
    state: Mutex<State>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`. Segments left by a previous run are kept and
    /// marked for replay; a torn last record (a crash mid-write, never acknowledged) is cut off.
    pub fn open(
        label: &'static str,
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        segment_age: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create WAL directory {}", dir.display()))?;
        let node_tag = node_tag(dir)?;
        let mut segments = BTreeMap::new();
        let mut total_bytes = 0;
        let mut last_id = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(id) = segment_id(&path) else {
                continue;
            };
            let scan = scan(&path)?;
            if scan.rows == 0 && scan.users == 0 {
                std::fs::remove_file(&path)?;
                continue;
            }
            total_bytes += scan.valid_len;
            last_id = last_id.max(id);
            let now = Instant::now();
            segments.insert(
                id,
                Segment {
                    id,
                    path,
                    bytes: scan.valid_len,
                    rows: scan.rows,
                    inserted: 0,
                    sealed: true,
                    needs_replay: true,
                    created: now,
                    last_insert: now,
                    short: None,
                },
            );
        }
        if !segments.is_empty() {
            tracing::info!(
                segments = segments.len(),
                bytes = total_bytes,
                "write-ahead log has segments to replay"
            );
        }
        let inner = Arc::new(Inner {
            label,
            dir: dir.to_path_buf(),
            node_tag,
            max_bytes,
            segment_bytes,
            segment_age,
            state: Mutex::new(State {
                segments,
                active: None,
                total_bytes,
                last_id,
            }),
        });
        let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("chgate-wal".into())
            .spawn(move || worker.run(rx))
            .context("cannot start the WAL thread")?;
        let wal = Self { inner, tx };
        wal.publish_gauges();
        Ok(wal)
    }

    /// Appends one encoded batch; resolves with the segment id once it is on disk.
    pub async fn append(&self, payload: Vec<u8>, rows: u64) -> Result<u64, WalError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(AppendRequest {
                payload,
                rows,
                reply,
            })
            .await
            .map_err(|_| WalError::Closed)?;
        done.await.map_err(|_| WalError::Closed)?
    }

    /// Records that ClickHouse accepted `rows` event rows of `segment`.
    pub fn mark_inserted(&self, segment: u64, rows: u64) {
        let mut state = self.inner.lock();
        if let Some(s) = state.segments.get_mut(&segment) {
            s.inserted += rows;
            s.last_insert = Instant::now();
        }
    }

    /// Seals the active segment if it is old enough, so it can be retired.
    pub fn seal_if_due(&self) {
        let mut state = self.inner.lock();
        let due = state.active.as_ref().is_some_and(|a| {
            state
                .segments
                .get(&a.id)
                .is_some_and(|s| s.created.elapsed() >= self.inner.segment_age)
        });
        if due {
            state.seal_active();
        }
    }

    /// Runs `f` over the segment table under the lock.
    pub fn with_segments<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, Segment>) -> T) -> T {
        f(&mut self.inner.lock().segments)
    }

    /// Deletes a segment whose rows are all stored.
    pub fn retire(&self, id: u64) -> anyhow::Result<()> {
        let path = {
            let mut state = self.inner.lock();
            let Some(segment) = state.segments.remove(&id) else {
                return Ok(());
            };
            state.total_bytes = state.total_bytes.saturating_sub(segment.bytes);
            segment.path
        };
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot delete WAL segment {}", path.display()))?;
        metrics::counter!("chgate_ingest_wal_segments_retired_total", "wal" => self.inner.label)
            .increment(1);
        self.publish_gauges();
        Ok(())
    }

    /// Every batch of a segment, for replay and repair.
    pub fn read_segment(&self, id: u64) -> anyhow::Result<Vec<WalBatch>> {
        let path = self.inner.dir.join(file_name(id));
        let mut batches = Vec::new();
        read_records(&path, |payload| {
            batches.push(postcard::from_bytes::<WalBatch>(payload).context("corrupt WAL record")?);
            Ok(())
        })?;
        Ok(batches)
    }

    pub fn total_bytes(&self) -> u64 {
        self.inner.lock().total_bytes
    }

    pub fn publish_gauges(&self) {
        self.inner.publish(&self.inner.lock());
    }
}

impl Inner {
    fn publish(&self, state: &State) {
        metrics::gauge!("chgate_ingest_wal_bytes", "wal" => self.label)
            .set(state.total_bytes as f64);
        metrics::gauge!("chgate_ingest_wal_segments", "wal" => self.label)
            .set(state.segments.len() as f64);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The group-commit loop, on its own thread: blocking file I/O stays off the async runtime.
    fn run(&self, mut rx: mpsc::Receiver<AppendRequest>) {
        let mut busy = false;
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            if busy {
                // Appends arrive together under load: wait a moment for more of them, so one fsync
                // acknowledges more (Postgres' commit_delay). Alone, an append never waits.
                std::thread::sleep(COMMIT_DELAY);
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            busy = group.len() > 1;
            let started = Instant::now();
            let results = self.write_group(&group);
            metrics::histogram!("chgate_ingest_wal_commit_seconds", "wal" => self.label)
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("chgate_ingest_wal_group_size", "wal" => self.label)
                .record(group.len() as f64);
            for (request, result) in group.into_iter().zip(results) {
                let _ = request.reply.send(result);
            }
            self.publish(&self.lock());
        }
        let mut state = self.lock();
        state.seal_active();
    }

    fn write_group(&self, group: &[AppendRequest]) -> Vec<Result<u64, WalError>> {
        let mut state = self.lock();
        let mut results = Vec::with_capacity(group.len());
        let mut buffer =
            Vec::with_capacity(group.iter().map(|r| RECORD_HEADER + r.payload.len()).sum());
        let mut accepted_rows = 0;
        let mut projected = state.total_bytes;
        for request in group {
            let size = (RECORD_HEADER + request.payload.len()) as u64;
            if projected + size > self.max_bytes {
                results.push(Err(WalError::Full {
                    bytes: projected,
                    limit: self.max_bytes,
                }));
                continue;
            }
            projected += size;
            buffer.extend_from_slice(&(request.payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&crc32fast::hash(&request.payload).to_le_bytes());
            buffer.extend_from_slice(&request.payload);
            accepted_rows += request.rows;
            results.push(Ok(0));
        }
        if buffer.is_empty() {
            return results;
        }
        let outcome = (|| -> std::io::Result<u64> {
            let id = self.active_segment(&mut state)?;
            let Some(active) = state.active.as_mut() else {
                return Err(std::io::Error::other("no active segment"));
            };
            active.file.write_all(&buffer)?;
            active.file.sync_data()?;
            Ok(id)
        })();
        match outcome {
            Ok(id) => {
                let len = buffer.len() as u64;
                state.total_bytes += len;
                let rotate = match state.segments.get_mut(&id) {
                    Some(segment) => {
                        segment.bytes += len;
                        segment.rows += accepted_rows;
                        segment.bytes >= self.segment_bytes
                    }
                    None => false,
                };
                if rotate {
                    state.seal_active();
                }
                results.into_iter().map(|r| r.map(|_| id)).collect()
            }
            Err(err) => {
                tracing::error!(error = %err, "WAL write failed");
                metrics::counter!("chgate_ingest_wal_errors_total", "wal" => self.label)
                    .increment(1);
                // The segment may hold a partial record now: start a fresh one next time.
                state.seal_active();
                results
                    .into_iter()
                    .map(|r| r.and(Err(WalError::Io(err.to_string()))))
                    .collect()
            }
        }
    }

    fn active_segment(&self, state: &mut State) -> std::io::Result<u64> {
        if let Some(active) = &state.active {
            return Ok(active.id);
        }
        let millis = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let mut id = (millis << 16) | self.node_tag;
        if id <= state.last_id {
            id = ((state.last_id >> 16) + 1) << 16 | self.node_tag;
        }
        let path = self.dir.join(file_name(id));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        file.write_all(MAGIC)?;
        file.sync_data()?;
        // Make the new directory entry durable too.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        state.last_id = id;
        state.total_bytes += MAGIC.len() as u64;
        let now = Instant::now();
        state.segments.insert(
            id,
            Segment {
                id,
                path,
                bytes: MAGIC.len() as u64,
                rows: 0,
                inserted: 0,
                sealed: false,
                needs_replay: false,
                created: now,
                last_insert: now,
                short: None,
            },
        );
        state.active = Some(Active { id, file });
        Ok(id)
    }
}

impl State {
    fn seal_active(&mut self) {
        if let Some(active) = self.active.take() {
            if let Some(segment) = self.segments.get_mut(&active.id) {
                segment.sealed = true;
            }
        }
    }
}

fn file_name(id: u64) -> String {
    format!("{id:020}.wal")
}

fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".wal")?.parse().ok()
}

/// A random tag per WAL directory, kept in `node_tag`, distinguishing gateways.
fn node_tag(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join("node_tag");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(tag) = text.trim().parse::<u16>() {
            return Ok(u64::from(tag));
        }
    }
    let tag: u16 = rand::random();
    std::fs::write(&path, tag.to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(u64::from(tag))
}

struct Scan {
    rows: u64,
    users: u64,
    valid_len: u64,
}

/// Counts a segment's rows and cuts off a torn tail.
fn scan(path: &Path) -> anyhow::Result<Scan> {
    let mut rows = 0;
    let mut users = 0;
    let valid_len = read_records(path, |payload| {
        let batch: WalBatch = postcard::from_bytes(payload).context("corrupt WAL record")?;
        rows += batch.rows.len() as u64;
        users += batch.users.len() as u64;
        Ok(())
    })?;
    let actual = std::fs::metadata(path)?.len();
    if actual != valid_len {
        tracing::warn!(path = %path.display(), kept = valid_len, found = actual, "cutting off a torn WAL tail (never acknowledged)");
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(valid_len)?;
    }
    Ok(Scan {
        rows,
        users,
        valid_len,
    })
}

/// Calls `f` for each intact record; returns the length of the intact prefix of the file.
fn read_records(
    path: &Path,
    mut f: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut data))
        .with_context(|| format!("cannot read WAL segment {}", path.display()))?;
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        anyhow::bail!("{} is not a chgate WAL segment", path.display());
    }
    let mut offset = MAGIC.len();
    while data.len() >= offset + RECORD_HEADER {
        let len = u32::from_le_bytes([
            data[offset],
            data[offset + 1],
            data[offset + 2],
            data[offset + 3],
        ]) as usize;
        let crc = u32::from_le_bytes([
            data[offset + 4],
            data[offset + 5],
            data[offset + 6],
            data[offset + 7],
        ]);
        let start = offset + RECORD_HEADER;
        let Some(payload) = data.get(start..start + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        f(payload)?;
        offset = start + len;
    }
    Ok(offset as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> WalBatch {
        WalBatch {
            rows: vec![sample_row(); n],
            users: vec![],
        }
    }

    /// A log in `dir` with the given size limit and segment size (segments never age out).
    fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Wal {
        Wal::open(
            "test",
            dir,
            max_bytes,
            segment_bytes,
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn sample_row() -> EventRow {
        crate::ingest::row::tests::sample_row()
    }

    #[tokio::test]
    async fn appended_batches_survive_a_reopen_and_are_marked_for_replay() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path(), 1 << 30, 1 << 20);
        let first = wal.append(batch(3).encode().unwrap(), 3).await.unwrap();
        let second = wal.append(batch(2).encode().unwrap(), 2).await.unwrap();
        assert_eq!(first, second, "one active segment");
        drop(wal);

        let reopened = open(dir.path(), 1 << 30, 1 << 20);
        let rows = reopened.with_segments(|s| {
            s.values()
                .map(|s| (s.rows, s.needs_replay))
                .collect::<Vec<_>>()
        });
        assert_eq!(rows, vec![(5, true)]);
        let batches = reopened.read_segment(first).unwrap();
        assert_eq!(batches.iter().map(|b| b.rows.len()).sum::<usize>(), 5);
        assert_eq!(batches[0].rows[0], sample_row());
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path(), 1 << 30, 1 << 20);
        let id = wal.append(batch(4).encode().unwrap(), 4).await.unwrap();
        drop(wal);
        let path = dir.path().join(file_name(id));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();

        let reopened = open(dir.path(), 1 << 30, 1 << 20);

        assert_eq!(reopened.with_segments(|s| s[&id].rows), 4);
        assert_eq!(reopened.read_segment(id).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn appends_beyond_the_size_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path(), 2_000, 1 << 20);
        let payload = batch(1).encode().unwrap();
        let mut refused = false;
        for _ in 0..100 {
            if let Err(WalError::Full { .. }) = wal.append(payload.clone(), 1).await {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[tokio::test]
    async fn segments_rotate_by_size_and_retire_deletes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(dir.path(), 1 << 30, 10);
        let a = wal.append(batch(1).encode().unwrap(), 1).await.unwrap();
        let b = wal.append(batch(1).encode().unwrap(), 1).await.unwrap();
        assert!(b > a);
        assert!(wal.with_segments(|s| s[&a].sealed));

        wal.retire(a).unwrap();

        assert!(!dir.path().join(file_name(a)).exists());
        assert!(dir.path().join(file_name(b)).exists());
    }
}
