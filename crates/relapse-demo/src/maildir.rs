//! The backend's mail store: a maildir (`tmp/`, `new/`, `cur/`) on a file system the harness
//! can freeze, for the OpenSRS Cluster B incident (a file-system lockup under the mail service).
//!
//! Every operation that touches the file system runs on a blocking thread, never on the async
//! runtime: a frozen file system parks that thread in state D while the process goes on serving
//! its other routes (the shallow `/health` above all), as the real mail servers did.
//!
//! * Delivery is the maildir protocol: write `tmp/NAME`, fsync it, rename it into `new/NAME`,
//!   fsync `new/`.
//! * A listing reads `new/` and `cur/` (reads go on during a freeze) and then rewrites the seen
//!   index, `seen.index`, a `dovecot-uidlist`-like file (write `seen.index.lock`, fsync, rename,
//!   fsync the maildir): that write is what hangs a listing during a freeze. Listings are
//!   serialized by an async lock, so however many wait, at most one thread is blocked in one.
//!   The index is group-committed: a listing that finds, once it holds the lock, that a write
//!   which began after it arrived has completed, and that would hand out no new uid, does not
//!   write again. So the listings that piled up behind a freeze cost one more write after the
//!   thaw, not one each (a hundred fsyncs in a row on a slow disk would hold webmail down long
//!   after the store came back).
//! * The deep health check writes and fsyncs `health.probe`. At most one is in flight: while one
//!   is stuck, the next ones fail at once instead of parking a thread each.
//!
//! Directories are 0755 and files 0644, whatever the umask, so that an unprivileged IMAP server
//! can read the same maildir.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::{Mailbox, Message};

/// The seen index, in the maildir's top directory.
pub(crate) const SEEN_INDEX: &str = "seen.index";
/// Written in full and renamed over [`SEEN_INDEX`].
const SEEN_INDEX_LOCK: &str = "seen.index.lock";
/// The deep health check's probe file, in the maildir's top directory.
pub(crate) const HEALTH_PROBE: &str = "health.probe";
/// The first line of [`SEEN_INDEX`] starts with this, then `V<uidvalidity> N<next uid>
/// L<listings>`.
const INDEX_MAGIC: &str = "relapse-seen 1";
/// How much of a message a listing reads to find its headers.
const MAX_HEADER_READ: u64 = 64 * 1024;

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// The uids a listing has handed out, as kept in [`SEEN_INDEX`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenIndex {
    uid_validity: u64,
    next_uid: u64,
    /// How many listings have written the index, ever (a listing another one's write stood
    /// for does not count).
    listings: u64,
    /// Message base name (the maildir file name without its `:2,FLAGS` info) to uid.
    uids: BTreeMap<String, u64>,
}

impl SeenIndex {
    fn fresh() -> SeenIndex {
        SeenIndex {
            uid_validity: unix_now().as_secs().max(1),
            next_uid: 1,
            listings: 0,
            uids: BTreeMap::new(),
        }
    }

    /// Parses an index file; `None` if it is not one (then a fresh index replaces it).
    fn parse(text: &str) -> Option<SeenIndex> {
        let mut lines = text.lines();
        let header = lines.next()?.strip_prefix(INDEX_MAGIC)?;
        let mut fields = header.split_whitespace();
        let mut field = |prefix: char| fields.next()?.strip_prefix(prefix)?.parse::<u64>().ok();
        let (uid_validity, next_uid, listings) = (field('V')?, field('N')?, field('L')?);
        let mut uids = BTreeMap::new();
        for line in lines {
            let (uid, name) = line.split_once(" :")?;
            let uid = uid.parse::<u64>().ok().filter(|uid| *uid < next_uid)?;
            uids.insert(name.to_owned(), uid);
        }
        Some(SeenIndex {
            uid_validity,
            next_uid,
            listings,
            uids,
        })
    }

    fn render(&self) -> String {
        let mut text = format!(
            "{INDEX_MAGIC} V{} N{} L{}\n",
            self.uid_validity, self.next_uid, self.listings
        );
        let mut by_uid: Vec<_> = self.uids.iter().collect();
        by_uid.sort_by_key(|(_, uid)| **uid);
        for (name, uid) in by_uid {
            text.push_str(&format!("{uid} :{name}\n"));
        }
        text
    }
}

/// Why the deep health check failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeepFailure {
    #[error("the mail store probe write did not finish within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("an earlier mail store probe write is still blocked")]
    StillBlocked,
    #[error("the mail store probe write failed: {0}")]
    Io(io::Error),
}

/// Counters for the backend's `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) listings: AtomicU64,
    /// Listings waiting for the index lock (behind one that is stuck, during a freeze).
    pub(crate) listings_waiting: AtomicU64,
    pub(crate) deep_ok: AtomicU64,
    pub(crate) deep_failed: AtomicU64,
}

/// The mail store of the backend.
#[derive(Debug)]
pub(crate) struct Maildir {
    root: PathBuf,
    deep_timeout: Duration,
    /// Held (owned, moved into the blocking thread) for the whole of a listing.
    index: Arc<tokio::sync::Mutex<SeenIndex>>,
    /// Index writes begun so far; a write's number is taken under the lock, as it begins.
    index_writes_begun: Arc<AtomicU64>,
    /// The number of the last index write that completed (0: none yet).
    index_written: Arc<AtomicU64>,
    /// Set while a deep check's probe write has not returned, even after its request timed out.
    deep_in_flight: Arc<AtomicBool>,
    /// The `Q` part of delivered names: unique within this process.
    sequence: AtomicU64,
    /// This host's name, with `/` and `:` escaped as the maildir specification asks.
    host: String,
    pub(crate) counters: Counters,
}

/// Counts a listing as waiting for the index lock until it has it (or its request is gone).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a AtomicU64) -> Waiting<'a> {
        gauge.fetch_add(1, Ordering::AcqRel);
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Clears the deep check's in-flight flag when the probe write returns (or panics).
struct InFlight(Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Maildir {
    /// Creates `root` (if missing) and its `tmp/`, `new/` and `cur/`, and loads the seen index.
    /// Blocking; called once at start, before the readiness line.
    pub(crate) fn open(root: PathBuf, deep_timeout: Duration) -> io::Result<Maildir> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&root)
            .map_err(context(format!("creating {}", root.display())))?;
        for sub in ["tmp", "new", "cur"] {
            let dir = root.join(sub);
            match DirBuilder::new().mode(DIR_MODE).create(&dir) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(context(format!("creating {}", dir.display()))(error)),
            }
            // The umask may have taken bits away; these directories are ours.
            std::fs::set_permissions(&dir, Permissions::from_mode(DIR_MODE))
                .map_err(context(format!("setting the mode of {}", dir.display())))?;
        }
        let index = match std::fs::read_to_string(root.join(SEEN_INDEX)) {
            Ok(text) => SeenIndex::parse(&text).unwrap_or_else(|| {
                tracing::warn!(root = %root.display(), "unreadable seen index, starting afresh");
                SeenIndex::fresh()
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => SeenIndex::fresh(),
            Err(error) => {
                return Err(context(format!(
                    "reading the seen index in {}",
                    root.display()
                ))(error))
            }
        };
        let host = nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".to_owned())
            .replace('/', "\\057")
            .replace(':', "\\072");
        Ok(Maildir {
            root,
            deep_timeout,
            index: Arc::new(tokio::sync::Mutex::new(index)),
            index_writes_begun: Arc::new(AtomicU64::new(0)),
            index_written: Arc::new(AtomicU64::new(0)),
            deep_in_flight: Arc::new(AtomicBool::new(false)),
            sequence: AtomicU64::new(0),
            host,
            counters: Counters::default(),
        })
    }

    /// Delivers `message`: `tmp/NAME`, fsync, rename to `new/NAME`, fsync `new/`. Returns
    /// `new/NAME`. Hangs while the file system is frozen.
    pub(crate) async fn deliver(self: &Arc<Self>, message: Bytes) -> io::Result<String> {
        let now = unix_now();
        let name = format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            self.host
        );
        let root = self.root.clone();
        let delivered = blocking(move || {
            let tmp = root.join("tmp").join(&name);
            let new_dir = root.join("new");
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            file.set_permissions(Permissions::from_mode(FILE_MODE))?;
            file.write_all(&message)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, new_dir.join(&name))?;
            File::open(&new_dir)?.sync_all()?;
            Ok(format!("new/{name}"))
        })
        .await?;
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(delivered)
    }

    /// Lists `new/` and `cur/` (by uid) and rewrites the seen index with the uids handed out.
    /// Hangs while the file system is frozen (the index write blocks; the reads would not).
    pub(crate) async fn list(self: &Arc<Self>) -> io::Result<Mailbox> {
        let begun_before_arrival = self.index_writes_begun.load(Ordering::Acquire);
        let waiting = Waiting::new(&self.counters.listings_waiting);
        let mut index = self.index.clone().lock_owned().await;
        drop(waiting);
        // With the lock held, no write is in flight: one numbered past what had begun on
        // arrival began after this listing arrived, and completed.
        let covered = self.index_written.load(Ordering::Acquire) > begun_before_arrival;
        let (begun, written) = (self.index_writes_begun.clone(), self.index_written.clone());
        let root = self.root.clone();
        let mailbox = blocking(move || {
            let mut found = Vec::new();
            for sub in ["new", "cur"] {
                for entry in std::fs::read_dir(root.join(sub))? {
                    let entry = entry?;
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if name.starts_with('.') || !entry.file_type()?.is_file() {
                        continue;
                    }
                    found.push((sub, name));
                }
            }
            // The index after this listing: messages gone are forgotten, new ones get uids in
            // name order (names start with the delivery time).
            let mut next = SeenIndex {
                uids: BTreeMap::new(),
                listings: index.listings + 1,
                ..(*index).clone()
            };
            let base = |name: &str| name.split(':').next().unwrap_or(name).to_owned();
            found.sort_by_key(|(_, name)| base(name));
            let mut messages = Vec::new();
            for (sub, name) in found {
                let key = base(&name);
                let uid = match index.uids.get(&key) {
                    Some(uid) => *uid,
                    None => {
                        next.next_uid += 1;
                        next.next_uid - 1
                    }
                };
                next.uids.insert(key, uid);
                let (from, subject) = match headers(&root.join(sub).join(&name)) {
                    Ok(headers) => headers,
                    // Moved or expunged since the directory was read.
                    Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                };
                messages.push(Message {
                    id: uid,
                    from,
                    subject,
                    file: Some(format!("{sub}/{name}")),
                });
            }
            messages.sort_by_key(|message| message.id);
            if covered && next.uids == index.uids {
                return Ok(Mailbox { messages });
            }
            let number = begun.fetch_add(1, Ordering::AcqRel) + 1;
            write_index(&root, &next)?;
            written.store(number, Ordering::Release);
            *index = next;
            Ok(Mailbox { messages })
        })
        .await?;
        self.counters.listings.fetch_add(1, Ordering::Relaxed);
        Ok(mailbox)
    }

    /// Writes and fsyncs [`HEALTH_PROBE`] on a thread, waiting at most the deep-check timeout.
    pub(crate) async fn deep_check(&self) -> Result<(), DeepFailure> {
        let outcome = self.probe().await;
        let counter = match outcome {
            Ok(()) => &self.counters.deep_ok,
            Err(_) => &self.counters.deep_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    async fn probe(&self) -> Result<(), DeepFailure> {
        if self
            .deep_in_flight
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(DeepFailure::StillBlocked);
        }
        let in_flight = InFlight(self.deep_in_flight.clone());
        let path = self.root.join(HEALTH_PROBE);
        let write = blocking(move || {
            let _in_flight = in_flight;
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(FILE_MODE)
                .open(&path)?;
            writeln!(file, "{}", unix_now().as_millis())?;
            file.sync_all()
        });
        match tokio::time::timeout(self.deep_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(DeepFailure::Io(error)),
            // The thread stays blocked, and keeps the in-flight flag set until it returns.
            Err(_) => Err(DeepFailure::Timeout(self.deep_timeout)),
        }
    }

    /// Whether a deep check's probe write has not returned yet.
    pub(crate) fn deep_check_blocked(&self) -> bool {
        self.deep_in_flight.load(Ordering::Acquire)
    }
}

/// Runs `work` on a blocking thread; a panic there is an I/O error here.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(io::Error::other(format!("mail store thread: {error}"))))
}

/// `seen.index.lock`: create, write, fsync; rename over `seen.index`; fsync the directory.
fn write_index(root: &Path, index: &SeenIndex) -> io::Result<()> {
    let lock = root.join(SEEN_INDEX_LOCK);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&lock)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(index.render().as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&lock, root.join(SEEN_INDEX))?;
    File::open(root)?.sync_all()
}

/// The `From:` and `Subject:` of a message file (unfolded), empty when missing.
fn headers(path: &Path) -> io::Result<(String, String)> {
    let mut reader = BufReader::new(File::open(path)?.take(MAX_HEADER_READ));
    let (mut from, mut subject) = (String::new(), String::new());
    // Which of the two the previous header line was, for folded continuation lines.
    let mut current: Option<bool> = None;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(is_from) = current {
                let field = if is_from { &mut from } else { &mut subject };
                field.push(' ');
                field.push_str(line.trim());
            }
            continue;
        }
        current = None;
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let is_from = if name.eq_ignore_ascii_case("from") {
            true
        } else if name.eq_ignore_ascii_case("subject") {
            false
        } else {
            continue;
        };
        let field = if is_from { &mut from } else { &mut subject };
        if field.is_empty() {
            field.push_str(value.trim());
            current = Some(is_from);
        }
    }
    Ok((from, subject))
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |error| io::Error::new(error.kind(), format!("{what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seen_index_round_trips_and_rejects_garbage() {
        let mut index = SeenIndex {
            uid_validity: 1_700_000_000,
            next_uid: 4,
            listings: 7,
            uids: BTreeMap::new(),
        };
        index.uids.insert("b.M1P2Q2.host".to_owned(), 3);
        index.uids.insert("a.M1P2Q1.host".to_owned(), 1);
        let text = index.render();
        assert_eq!(
            text,
            "relapse-seen 1 V1700000000 N4 L7\n1 :a.M1P2Q1.host\n3 :b.M1P2Q2.host\n"
        );
        assert_eq!(SeenIndex::parse(&text), Some(index));
        for garbage in [
            "",
            "3 V1 N2\n",
            "relapse-seen 1 V1 N2\n",
            "relapse-seen 1 V1 N2 L0\nnot a line\n",
            // A uid at or past next_uid would be handed out twice.
            "relapse-seen 1 V1 N2 L0\n2 :a\n",
        ] {
            assert_eq!(SeenIndex::parse(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn headers_are_found_case_insensitively_and_unfolded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("message");
        std::fs::write(
            &path,
            "Received: x\r\nfrom: Alice <alice@example.com>\r\nSUBJECT: Lunch\r\n  on Thursday?\r\n\
             X-Other: y\r\n\r\nSubject: not a header, the body\r\n",
        )
        .unwrap();
        assert_eq!(
            headers(&path).unwrap(),
            (
                "Alice <alice@example.com>".to_owned(),
                "Lunch on Thursday?".to_owned()
            )
        );
    }
}
