//! The notify spool: where `fnm-escalator notify` leaves a notification it could not deliver
//! (FastNetMon neither retries nor looks at the script's exit code). One file per notification,
//! written atomically, named so that lexical order is delivery order. Both the notify command and
//! the service drain it, under an exclusive lock; the idempotency key in each file makes a
//! redelivery after a lost acknowledgement a no-op, so each arrives exactly once.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// A spooled notification: the JSON document plus how and when it was produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub idempotency_key: String,
    pub observed_at: Millis,
    /// `notify_json` or `notify_text`.
    pub source: String,
    pub body: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {dir}: {reason}")]
    Io { dir: PathBuf, reason: String },
}

pub struct Spool {
    dir: PathBuf,
}

/// An exclusive hold on the spool for draining; released on drop.
pub struct DrainLock {
    _file: File,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Spool {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Spool { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, e: std::io::Error) -> SpoolError {
        SpoolError::Io {
            dir: self.dir.clone(),
            reason: e.to_string(),
        }
    }

    /// Writes one envelope durably (temp file, fsync, rename, fsync of the directory).
    pub fn put(&self, env: &Envelope) -> Result<PathBuf, SpoolError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.io(e))?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{:016}-{:09}-{:010}-{:06}.json",
            env.observed_at.max(0),
            nanos,
            std::process::id(),
            seq % 1_000_000
        );
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let path = self.dir.join(&name);
        let data = serde_json::to_vec(env).map_err(|e| SpoolError::Io {
            dir: self.dir.clone(),
            reason: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io(e)
        })?;
        Ok(path)
    }

    /// Spooled files, oldest first. A missing directory is an empty spool.
    pub fn pending(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
                    && p.is_file()
            })
            .collect();
        files.sort();
        Ok(files)
    }

    pub fn is_empty(&self) -> bool {
        self.pending().map(|p| p.is_empty()).unwrap_or(true)
    }

    /// Takes the drain lock without waiting; None if another process is draining.
    pub fn try_lock(&self) -> Result<Option<DrainLock>, SpoolError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.io(e))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))
            .map_err(|e| self.io(e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DrainLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(self.io(e)),
        }
    }

    /// Reads one spooled file.
    pub fn read(&self, path: &Path) -> Result<Envelope, String> {
        let data = fs::read(path).map_err(|e| e.to_string())?;
        let env: Envelope = serde_json::from_slice(&data).map_err(|e| e.to_string())?;
        if env.version != 1 {
            return Err(format!("unknown spool version {}", env.version));
        }
        Ok(env)
    }

    /// Delivered: gone.
    pub fn remove(&self, path: &Path) -> Result<(), SpoolError> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// A file that can never be delivered is moved aside (kept for the operator), with the
    /// reason next to it, so it does not block the spool.
    pub fn quarantine(&self, path: &Path, reason: &str) -> Result<PathBuf, SpoolError> {
        let qdir = self.dir.join("quarantine");
        fs::create_dir_all(&qdir).map_err(|e| self.io(e))?;
        let name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "unnamed".into());
        let target = qdir.join(&name);
        fs::rename(path, &target).map_err(|e| self.io(e))?;
        let mut why = target.clone().into_os_string();
        why.push(".error");
        let _ = fs::write(PathBuf::from(why), format!("{reason}\n"));
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(i: i64) -> Envelope {
        Envelope {
            version: 1,
            idempotency_key: format!("k{i}"),
            observed_at: 1_000 + i,
            source: "notify_text".into(),
            body: serde_json::json!({ "ip": "10.0.0.1", "action": "ban" }),
        }
    }

    #[test]
    fn files_come_back_in_the_order_they_were_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path().join("spool"));
        assert!(spool.is_empty());
        for i in 0..50 {
            spool.put(&env(i)).expect("put");
        }
        let files = spool.pending().expect("list");
        assert_eq!(files.len(), 50);
        for (i, f) in files.iter().enumerate() {
            assert_eq!(
                spool.read(f).expect("read").idempotency_key,
                format!("k{i}")
            );
        }
    }

    #[test]
    fn corrupt_files_are_quarantined_not_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path());
        let p = dir.path().join("0000000000000001-x.json");
        fs::write(&p, b"{not json").expect("write");
        assert!(spool.read(&p).is_err());
        let q = spool.quarantine(&p, "bad json").expect("quarantine");
        assert!(q.exists());
        assert!(spool.pending().expect("list").is_empty());
    }

    #[test]
    fn only_one_drainer_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path());
        let held = spool.try_lock().expect("lock");
        assert!(held.is_some());
        let other = Spool::new(dir.path());
        assert!(other.try_lock().expect("lock").is_none());
        drop(held);
        assert!(other.try_lock().expect("lock").is_some());
    }
}
