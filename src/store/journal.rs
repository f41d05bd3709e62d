//! The ingest journal: notifications acknowledged before their rows are committed.
//!
//! Under load the recorder applies each group of notifications inside a transaction that stays
//! open across groups (one commit per `HOLD` instead of one per group: most of a commit's cost
//! is writing every page it dirtied to the WAL, and pages touched by many groups are then
//! written once). A group's callers are answered once the group is appended here, in one
//! `write`: like a WAL commit with `synchronous = NORMAL`, that survives `kill -9` of the
//! service (the data is in the kernel's page cache), not a power loss.
//!
//! Each entry carries a sequence number; the transaction that commits entries also stores the
//! last one's number (`journal_applied`), and the file is emptied after every commit. At start
//! the entries past the stored number, those a crash left uncommitted, are applied again, in
//! order, before anything else is recorded. An entry cut short (a write interrupted by a power
//! loss) ends the readable part of the file: it was never acknowledged.
//!
//! Frame: `len: u32 LE | crc32c(seq ++ body): u32 LE | seq: u64 LE | body`. The body (version
//! 2): `2 | observed_at: i64 LE | received_at: i64 LE | key | source | actor | payload`, where
//! `key` is `len: u32 LE` (`u32::MAX` for none) and its bytes, `source` and `actor` the same
//! without the none, and `payload` the rest: the document as received. Its notification is
//! parsed again when the entry is read, which only a restart does; under load every entry is
//! written, and writing the parsed notification and the payload again as JSON (the payload
//! escaped as a string) was most of the 2.4 µs per notification serde took on the recorder
//! thread. A body that starts with `{` is version 1, the JSON of the entry, as written before:
//! still read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Incoming, StoreError};
use crate::fastnetmon::notification::parse_json;

/// Slice-by-16: every acknowledged notification's frame is summed on the recorder thread, and
/// the byte-at-a-time table was 4% of that thread's time under load.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
const HEADER: usize = 16;
/// No entry is this large (request bodies are limited far below it): a length past it is a
/// damaged frame.
const MAX_ENTRY: usize = 64 << 20;
/// The first byte of a version 2 body (a version 1 body is a JSON object: `{`).
const V2: u8 = 2;
/// `key`'s length when there is no idempotency key.
const NO_KEY: u32 = u32::MAX;

/// An acknowledged notification as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(super) struct Entry {
    pub seq: u64,
    pub incoming: Incoming,
}

/// The journal file, open for appending.
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes of whole entries in the file: where the next one goes.
    len: u64,
    /// The next entry's sequence number.
    next: u64,
    /// An append failed and the file could not be cut back to its last whole entry: nothing is
    /// appended after the damage until a commit has emptied the file.
    damaged: bool,
}

impl Journal {
    /// The journal beside the database at `database` (a file path).
    pub fn path_for(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push("-ingest-journal");
        PathBuf::from(name)
    }

    /// Reads the readable entries of the journal at `path` (none if there is no file).
    pub fn read(path: &Path) -> Result<Vec<Entry>, StoreError> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(|e| journal_error(path, "cannot read", e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(journal_error(path, "cannot open", e)),
        }
        Ok(decode(&bytes, path))
    }

    /// Opens (creating) the journal at `path` for appending and takes an exclusive lock on it,
    /// waiting up to 5 s for one held by a service that is stopping: two services on one
    /// database would empty each other's journal.
    pub async fn lock(path: &Path) -> Result<File, StoreError> {
        use std::os::fd::AsRawFd;
        // Appending: after `set_len` (emptying, or cutting a failed write back) the next write
        // goes at the new end, not at the old offset.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| journal_error(path, "cannot open", e))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            // SAFETY: `flock` on a descriptor this function owns; no memory is shared.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(file);
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(journal_error(path, "cannot lock", e));
            }
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Journal(format!(
                    "the ingest journal {} is locked: another fnm-escalator uses this database",
                    path.display()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The journal at `path`, open and locked as `file` (see `lock`), emptied, numbering
    /// entries from `next`.
    pub fn create(path: &Path, file: File, next: u64) -> Result<Journal, StoreError> {
        file.set_len(0)
            .map_err(|e| journal_error(path, "cannot empty", e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            len: 0,
            next,
            damaged: false,
        })
    }

    /// Whether appends are possible (see `damaged`).
    pub fn usable(&self) -> bool {
        !self.damaged
    }

    /// Appends `incoming`, in order, in one write; returns the last entry's number. On failure
    /// the file is cut back to what it held before, so a failed group leaves no trace.
    pub fn append<'a>(
        &mut self,
        incoming: impl IntoIterator<Item = &'a Incoming>,
    ) -> Result<u64, StoreError> {
        let mut buf = Vec::with_capacity(4096);
        let mut seq = self.next;
        for inc in incoming {
            encode(&mut buf, seq, inc)?;
            seq += 1;
        }
        let written = self.file.write_all(&buf);
        if let Err(e) = written {
            // A short write leaves part of a frame; later frames after it would be unreadable.
            if self.file.set_len(self.len).is_err() {
                self.damaged = true;
            }
            return Err(journal_error(&self.path, "cannot append to", e));
        }
        self.len += buf.len() as u64;
        self.next = seq;
        Ok(seq - 1)
    }

    /// Empties the file once its entries are committed. A failure leaves entries the next
    /// start skips (their numbers are committed), so it only costs space; it is logged.
    pub fn clear(&mut self) {
        match self.file.set_len(0) {
            Ok(()) => {
                self.len = 0;
                self.damaged = false;
            }
            Err(e) => tracing::warn!(
                journal = %self.path.display(),
                error = %e,
                "cannot empty the ingest journal; it only takes space until the next commit"
            ),
        }
    }
}

fn encode(buf: &mut Vec<u8>, seq: u64, incoming: &Incoming) -> Result<(), StoreError> {
    // What is read back is parsed from the payload: it must be what the notification was
    // parsed from (every caller of the recorder builds it so).
    debug_assert_eq!(
        parse_json(incoming.payload.as_bytes()).ok().as_ref(),
        Some(&incoming.notification),
        "a journaled notification must be the parse of its payload"
    );
    put_frame(buf, seq, |body| put_body(body, incoming))
}

/// Appends a frame numbered `seq` around the body `body` writes.
fn put_frame(
    buf: &mut Vec<u8>,
    seq: u64,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    body(buf)?;
    let body_len = buf.len() - start - HEADER;
    let len = u32::try_from(body_len)
        .ok()
        .filter(|&l| (l as usize) <= MAX_ENTRY)
        .ok_or_else(|| StoreError::Journal("an entry is too large".into()))?;
    let seq_bytes = seq.to_le_bytes();
    let mut digest = CRC.digest();
    digest.update(&seq_bytes);
    digest.update(&buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&digest.finalize().to_le_bytes());
    buf[start + 8..start + 16].copy_from_slice(&seq_bytes);
    Ok(())
}

/// Appends `incoming`'s version 2 body.
fn put_body(buf: &mut Vec<u8>, incoming: &Incoming) -> Result<(), StoreError> {
    buf.push(V2);
    buf.extend_from_slice(&incoming.observed_at.to_le_bytes());
    buf.extend_from_slice(&incoming.received_at.to_le_bytes());
    match &incoming.idempotency_key {
        None => buf.extend_from_slice(&NO_KEY.to_le_bytes()),
        Some(key) => put_text(buf, key)?,
    }
    put_text(buf, &incoming.source)?;
    put_text(buf, &incoming.actor)?;
    buf.extend_from_slice(incoming.payload.as_bytes());
    Ok(())
}

fn put_text(buf: &mut Vec<u8>, text: &str) -> Result<(), StoreError> {
    let len = u32::try_from(text.len())
        .ok()
        .filter(|&l| l != NO_KEY)
        .ok_or_else(|| StoreError::Journal("an entry is too large".into()))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Why a whole frame (its checksum is right) cannot be read as an entry.
enum Unreadable {
    /// Not a body this code writes or wrote: what follows is not trusted either.
    Damaged,
    /// A version 2 entry whose payload no longer parses (a newer parser rejects what an older
    /// one accepted): that one entry cannot be applied, the rest can.
    Payload(String),
}

/// The entry in `body`, a whole frame's, numbered `seq`.
fn decode_body(seq: u64, body: &[u8]) -> Result<Entry, Unreadable> {
    if body.first() == Some(&b'{') {
        return match serde_json::from_slice::<Entry>(body) {
            Ok(e) if e.seq == seq => Ok(e),
            _ => Err(Unreadable::Damaged),
        };
    }
    let mut r = Reader { rest: body };
    if r.take(1)? != [V2] {
        return Err(Unreadable::Damaged);
    }
    let observed_at = r.i64()?;
    let received_at = r.i64()?;
    let idempotency_key = match r.u32()? {
        NO_KEY => None,
        len => Some(r.text(len)?),
    };
    let len = r.u32()?;
    let source = r.text(len)?;
    let len = r.u32()?;
    let actor = r.text(len)?;
    let payload = std::str::from_utf8(r.rest)
        .map_err(|_| Unreadable::Damaged)?
        .to_string();
    let notification =
        parse_json(payload.as_bytes()).map_err(|e| Unreadable::Payload(e.to_string()))?;
    Ok(Entry {
        seq,
        incoming: Incoming {
            notification,
            observed_at,
            received_at,
            idempotency_key,
            source,
            actor,
            payload,
        },
    })
}

struct Reader<'b> {
    rest: &'b [u8],
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], Unreadable> {
        if self.rest.len() < n {
            return Err(Unreadable::Damaged);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, Unreadable> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(w))
    }

    fn i64(&mut self) -> Result<i64, Unreadable> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(w))
    }

    fn text(&mut self, len: u32) -> Result<String, Unreadable> {
        let bytes = self.take(len as usize)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| Unreadable::Damaged)
    }
}

/// The whole frames at the start of `bytes`; stops at the first damaged one.
fn decode(bytes: &[u8], path: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[at + i..at + i + 4]);
            u32::from_le_bytes(w)
        };
        let len = word(0) as usize;
        let crc = word(4);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&bytes[at + 8..at + 16]);
        if len > MAX_ENTRY || bytes.len() - at - HEADER < len {
            break;
        }
        let body = &bytes[at + HEADER..at + HEADER + len];
        let mut digest = CRC.digest();
        digest.update(&seq_bytes);
        digest.update(body);
        if digest.finalize() != crc {
            break;
        }
        let seq = u64::from_le_bytes(seq_bytes);
        match decode_body(seq, body) {
            Ok(e) => out.push(e),
            Err(Unreadable::Damaged) => break,
            Err(Unreadable::Payload(reason)) => tracing::error!(
                journal = %path.display(),
                seq,
                %reason,
                "an acknowledged notification in the ingest journal no longer parses and is not \
                 applied (written by an older release that accepted it)"
            ),
        }
        at += HEADER + len;
    }
    if at < bytes.len() {
        tracing::warn!(
            journal = %path.display(),
            ignored_bytes = bytes.len() - at,
            "the ingest journal ends in a damaged entry (a write cut short); it was never acknowledged"
        );
    }
    out
}

fn journal_error(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Journal(format!("{what} the ingest journal {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn incoming(body: &str, key: Option<&str>) -> Incoming {
        Incoming {
            notification: parse_json(body.as_bytes()).expect("parse"),
            observed_at: 1_764_000_000_000,
            received_at: 1_764_000_000_005,
            idempotency_key: key.map(str::to_string),
            source: "web_callback".into(),
            actor: "fastnetmon".into(),
            payload: body.into(),
        }
    }

    fn samples() -> Vec<Incoming> {
        let mut out = Vec::new();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/advanced");
        for entry in std::fs::read_dir(dir).expect("fixtures").flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "json") {
                let body = std::fs::read_to_string(&p).expect("read");
                if parse_json(body.as_bytes()).is_ok() {
                    out.push(incoming(&body, None));
                }
            }
        }
        out.push(incoming(
            r#"{"ip":"2001:db8::7","action":"unban","alert_scope":"host"}"#,
            Some("k-1"),
        ));
        out
    }

    fn fresh(path: &Path, next: u64) -> Journal {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        Journal::create(path, file, next).expect("create")
    }

    #[test]
    fn entries_read_back_as_written_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let all = samples();
        assert!(all.len() > 3, "fixtures found: {}", all.len());
        let mut j = fresh(&path, 41);
        assert_eq!(j.append(&all[..2]).expect("append"), 42);
        assert_eq!(j.append(&all[2..]).expect("append"), 40 + all.len() as u64);
        let back = Journal::read(&path).expect("read");
        let seqs: Vec<u64> = back.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (41..41 + all.len() as u64).collect::<Vec<_>>());
        let incs: Vec<Incoming> = back.into_iter().map(|e| e.incoming).collect();
        assert_eq!(incs, all);
    }

    #[test]
    fn a_cut_or_damaged_tail_ends_what_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let all = samples();
        let mut j = fresh(&path, 1);
        j.append(&all[..3]).expect("append");
        let whole = std::fs::read(&path).expect("read");
        // Cut in the middle of the third entry: two are read.
        std::fs::write(&path, &whole[..whole.len() - 5]).expect("write");
        assert_eq!(Journal::read(&path).expect("read").len(), 2);
        // A flipped byte in the second entry's body: one is read.
        let mut bad = whole.clone();
        let second = HEADER
            + u32::from_le_bytes([whole[0], whole[1], whole[2], whole[3]]) as usize
            + HEADER
            + 3;
        bad[second] ^= 0x20;
        std::fs::write(&path, &bad).expect("write");
        assert_eq!(Journal::read(&path).expect("read").len(), 1);
        // Garbage, and no file at all: nothing.
        std::fs::write(&path, b"not a journal at all").expect("write");
        assert!(Journal::read(&path).expect("read").is_empty());
        std::fs::remove_file(&path).expect("rm");
        assert!(Journal::read(&path).expect("read").is_empty());
    }

    /// A whole frame numbered `seq` around `body`.
    fn frame(seq: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(&mut out, seq, |b| {
            b.extend_from_slice(body);
            Ok(())
        })
        .expect("frame");
        out
    }

    #[test]
    fn entries_an_older_release_wrote_are_read() {
        // Version 1: the JSON of the entry, as a stop may have left it before an upgrade.
        #[derive(Serialize)]
        struct V1<'a> {
            seq: u64,
            incoming: &'a Incoming,
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let all = samples();
        let mut bytes = Vec::new();
        for (i, inc) in all.iter().enumerate() {
            let seq = 7 + i as u64;
            let body = serde_json::to_vec(&V1 { seq, incoming: inc }).expect("json");
            bytes.extend(frame(seq, &body));
        }
        std::fs::write(&path, &bytes).expect("write");
        let back = Journal::read(&path).expect("read");
        assert_eq!(
            back.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (7..7 + all.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(
            back.into_iter().map(|e| e.incoming).collect::<Vec<_>>(),
            all
        );
        // A version 1 body whose number is not its frame's is damage: reading stops there.
        let body = serde_json::to_vec(&V1 {
            seq: 1,
            incoming: &all[0],
        })
        .expect("json");
        std::fs::write(&path, frame(2, &body)).expect("write");
        assert!(Journal::read(&path).expect("read").is_empty());
    }

    #[test]
    fn an_entry_that_no_longer_parses_is_left_out_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let all = samples();
        let mut j = fresh(&path, 1);
        j.append(&all[..1]).expect("append");
        // Entry 2: a whole frame whose payload the parser rejects (as a stricter release
        // would reject what an older one wrote).
        let mut rejected = all[0].clone();
        rejected.payload = r#"{"action":"ban","alert_scope":"host"}"#.into();
        assert!(parse_json(rejected.payload.as_bytes()).is_err());
        let mut body = Vec::new();
        put_body(&mut body, &rejected).expect("body");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend(frame(2, &body));
        std::fs::write(&path, &bytes).expect("write");
        let mut j = Journal {
            path: path.clone(),
            file: OpenOptions::new().append(true).open(&path).expect("open"),
            len: bytes.len() as u64,
            next: 3,
            damaged: false,
        };
        j.append(&all[1..2]).expect("append");
        let back = Journal::read(&path).expect("read");
        assert_eq!(back.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(back[0].incoming, all[0]);
        assert_eq!(back[1].incoming, all[1]);
        // A version 2 body cut inside its fields is damage: reading stops there.
        std::fs::write(&path, frame(1, &body[..12])).expect("write");
        assert!(Journal::read(&path).expect("read").is_empty());
    }

    #[test]
    fn clearing_empties_the_file_and_numbering_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let all = samples();
        let mut j = fresh(&path, 1);
        j.append(&all[..2]).expect("append");
        j.clear();
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
        assert_eq!(j.append(&all[2..3]).expect("append"), 3);
        let back = Journal::read(&path).expect("read");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].seq, 3);
    }
}
