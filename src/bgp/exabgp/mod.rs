//! ExaBGP 4.2 backend. ExaBGP runs `fnm-escalator exabgp-bridge --socket PATH` as its API process;
//! the bridge connects to the Unix socket this speaker listens on and relays our commands to
//! ExaBGP and ExaBGP's answers back. Every command waits for ExaBGP's `done`/`error`.
//! ExaBGP's RIB is read back with `show adj-rib out extensive`, so reconciliation works as with
//! gobgpd: a restarted ExaBGP holds nothing, and the checker announces the active escalations
//! again; a route for our prefix with attributes that are not ours is never replaced nor withdrawn.

pub mod bridge;
pub mod text;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, MutexGuard};
use tokio::task::AbortHandle;

use super::{BgpError, RibPath, Route, Speaker, SpeakerHealth, Withdrawn};

/// The first line a bridge sends, so a stray client is not taken for ExaBGP.
pub const HELLO: &str = "fnm-escalator-exabgp-bridge/1";
/// Longest line either side accepts (ExaBGP's lines are well under 1 kB).
pub const MAX_LINE: usize = 64 * 1024;
/// Lines from ExaBGP waiting to be read; ExaBGP only writes when asked, unless an operator
/// subscribed our process to events, and those are dropped beyond this.
const LINES_BUFFER: usize = 4096;
/// Most lines one answer may have (`show adj-rib out` of a big RIB), so reading is bounded.
const MAX_ANSWER_LINES: usize = 2_000_000;

/// A [`Speaker`] driving ExaBGP through the bridge connected to `socket`.
pub struct ExabgpSpeaker {
    shared: Arc<Shared>,
}

struct Shared {
    socket: PathBuf,
    /// Bounds connecting, each command's wait for an answer line, and waiting for a bridge.
    timeout: Duration,
    /// The current bridge's connection. Held for a whole exchange: commands never interleave.
    session: tokio::sync::Mutex<Option<Session>>,
    /// Which bridge is connected, for waiting on one and for `health` without the lock.
    bridge: watch::Sender<Option<BridgeInfo>>,
    next_id: AtomicU64,
    /// Bound in `new`; the accept task takes it on first use inside the runtime.
    listener: Mutex<Option<std::os::unix::net::UnixListener>>,
    accept_task: Mutex<Option<AbortHandle>>,
    /// Device and inode of the socket we created, so `Drop` removes only that file.
    socket_file: Option<(u64, u64)>,
}

#[derive(Debug, Clone)]
struct BridgeInfo {
    id: u64,
    hello: String,
}

struct Session {
    id: u64,
    writer: OwnedWriteHalf,
    lines: mpsc::Receiver<String>,
    _reader: AbortOnDrop,
    /// ExaBGP's adj-rib-out as last read, kept current with our own changes; `None` until read.
    /// Refreshed by every `list` (each reconcile), which also sees what others changed.
    rib: Option<HashMap<IpNet, Vec<RibPath>>>,
}

struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut task) = self.accept_task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
        // Remove the socket only if it is still the one we bound (not a successor's).
        if let (Some(ours), Ok(meta)) = (self.socket_file, std::fs::symlink_metadata(&self.socket))
        {
            if (meta.dev(), meta.ino()) == ours {
                let _ = std::fs::remove_file(&self.socket);
            }
        }
    }
}

impl ExabgpSpeaker {
    /// Binds the Unix socket the bridge connects to (creating its directory; a stale socket
    /// left by a crash is replaced, one another process listens on is not). The socket is mode
    /// 0660: ExaBGP's user needs to be in this service's group, or the same user.
    pub fn new(socket: &Path, timeout: Duration) -> Result<Self, BgpError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            BgpError::Unreachable(format!(
                "ExaBGP bridge socket {}: {what}: {e}",
                socket.display()
            ))
        };
        if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its directory", &e))?;
        }
        match std::fs::symlink_metadata(socket) {
            Ok(meta) if meta.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(socket) {
                    Ok(_) => {
                        return Err(fail(
                            "in use",
                            &"another process listens on it (a second fnm-escalator?)",
                        ))
                    }
                    Err(_) => std::fs::remove_file(socket)
                        .map_err(|e| fail("cannot remove the stale socket", &e))?,
                }
            }
            Ok(_) => return Err(fail("exists", &"and is not a socket; not touching it")),
            Err(_) => {}
        }
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .map_err(|e| fail("cannot listen", &e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| fail("cannot listen", &e))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| fail("cannot set its mode", &e))?;
        let socket_file = std::fs::symlink_metadata(socket)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let speaker = ExabgpSpeaker {
            shared: Arc::new(Shared {
                socket: socket.to_path_buf(),
                timeout,
                session: tokio::sync::Mutex::new(None),
                bridge: watch::Sender::new(None),
                next_id: AtomicU64::new(1),
                listener: Mutex::new(Some(listener)),
                accept_task: Mutex::new(None),
                socket_file,
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            speaker.ensure_accepting();
        }
        Ok(speaker)
    }

    /// Starts accepting bridges, once (it needs the runtime, which `new` may run before).
    fn ensure_accepting(&self) {
        let Some(std_listener) = self.shared.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let listener = match tokio::net::UnixListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(socket = %self.shared.socket.display(), error = %e, "cannot accept ExaBGP bridges");
                return;
            }
        };
        let weak = Arc::downgrade(&self.shared);
        let task = tokio::spawn(accept_loop(listener, weak));
        if let Ok(mut slot) = self.shared.accept_task.lock() {
            *slot = Some(task.abort_handle());
        }
    }

    /// The connected bridge's session, locked; waits up to `timeout` for a bridge to connect.
    async fn session(&self) -> Result<Locked<'_>, BgpError> {
        self.ensure_accepting();
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now() + shared.timeout;
        let mut bridge = shared.bridge.subscribe();
        loop {
            let current = bridge.borrow_and_update().as_ref().map(|b| b.id);
            if let Some(id) = current {
                let guard = tokio::time::timeout_at(deadline, shared.session.lock())
                    .await
                    .map_err(|_| {
                        BgpError::Unreachable(format!(
                            "ExaBGP is busy: no answer within {:?}",
                            shared.timeout
                        ))
                    })?;
                if guard.as_ref().map(|s| s.id) == Some(id) {
                    return Ok(Locked { guard, shared });
                }
                // A newer bridge is being installed; its announcement follows.
            }
            if tokio::time::timeout_at(deadline, bridge.changed())
                .await
                .is_err()
            {
                return Err(BgpError::Unreachable(format!(
                    "no ExaBGP bridge connected to {} (is ExaBGP running, with `run \
                     fnm-escalator exabgp-bridge --socket {}` in its process block?)",
                    shared.socket.display(),
                    shared.socket.display()
                )));
            }
        }
    }
}

/// A locked session: the one place commands are written and answers read.
struct Locked<'a> {
    guard: MutexGuard<'a, Option<Session>>,
    shared: &'a Shared,
}

impl Locked<'_> {
    /// Sends one command and returns the lines ExaBGP wrote before its `done`. A connection
    /// that fails or falls silent is dropped: an answer arriving late would otherwise be taken
    /// for the next command's; the bridge reconnects in a moment.
    async fn send(&mut self, command: &str) -> Result<Vec<String>, BgpError> {
        let session = self.guard.as_mut().ok_or_else(|| {
            BgpError::Unreachable("the ExaBGP bridge connection was dropped".into())
        })?;
        let id = session.id;
        let result = exchange(session, command, self.shared.timeout).await;
        if matches!(result, Err(BgpError::Unreachable(_))) {
            *self.guard = None;
            self.shared.bridge.send_if_modified(|b| {
                let ours = b.as_ref().is_some_and(|b| b.id == id);
                if ours {
                    *b = None;
                }
                ours
            });
        }
        result
    }

    /// ExaBGP's adj-rib-out, read now if not known for this connection.
    async fn rib(&mut self) -> Result<&mut HashMap<IpNet, Vec<RibPath>>, BgpError> {
        let known = self.guard.as_ref().is_some_and(|s| s.rib.is_some());
        if !known {
            self.refresh_rib().await?;
        }
        self.guard
            .as_mut()
            .and_then(|s| s.rib.as_mut())
            .ok_or_else(|| BgpError::Unreachable("the ExaBGP bridge connection was dropped".into()))
    }

    async fn refresh_rib(&mut self) -> Result<(), BgpError> {
        let lines = self.send(text::SHOW_RIB).await?;
        let mut rib: HashMap<IpNet, Vec<RibPath>> = HashMap::new();
        for path in lines.iter().filter_map(|l| text::parse_rib_line(l)) {
            let paths = rib.entry(path.prefix).or_default();
            // One line per neighbour: keep each distinct path once.
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        if let Some(s) = self.guard.as_mut() {
            s.rib = Some(rib);
        }
        Ok(())
    }
}

async fn exchange(
    session: &mut Session,
    command: &str,
    timeout: Duration,
) -> Result<Vec<String>, BgpError> {
    // Whatever ExaBGP said unasked (events an operator subscribed us to) is not an answer.
    while let Ok(line) = session.lines.try_recv() {
        tracing::debug!(line, "ExaBGP: unsolicited line");
    }
    let mut bytes = command.as_bytes().to_vec();
    bytes.push(b'\n');
    match tokio::time::timeout(timeout, session.writer.write_all(&bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(BgpError::Unreachable(format!(
                "ExaBGP bridge: cannot send `{command}`: {e}"
            )))
        }
        Err(_) => {
            return Err(BgpError::Unreachable(format!(
                "ExaBGP bridge: cannot send `{command}` within {timeout:?}"
            )))
        }
    }
    let mut answer = Vec::new();
    loop {
        // A silence limit, not a total one: a big `show adj-rib out` streams for a while.
        match tokio::time::timeout(timeout, session.lines.recv()).await {
            Err(_) => {
                return Err(BgpError::Unreachable(format!(
                    "ExaBGP did not answer `{command}` within {timeout:?} (ExaBGP must run \
                     with exabgp.api.ack = true, its default)"
                )))
            }
            Ok(None) => {
                return Err(BgpError::Unreachable(format!(
                    "the ExaBGP bridge disconnected before ExaBGP answered `{command}`"
                )))
            }
            Ok(Some(line)) => match line.trim() {
                text::DONE => return Ok(answer),
                text::ERROR => {
                    return Err(BgpError::Rejected(format!(
                        "ExaBGP answered `error` to `{command}` (its log says why)"
                    )))
                }
                _ if answer.len() >= MAX_ANSWER_LINES => {
                    return Err(BgpError::Unreachable(format!(
                        "ExaBGP's answer to `{command}` exceeds {MAX_ANSWER_LINES} lines"
                    )))
                }
                _ => answer.push(line),
            },
        }
    }
}

async fn accept_loop(listener: tokio::net::UnixListener, shared: Weak<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handshake(stream, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting an ExaBGP bridge failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
    }
}

/// Reads the bridge's hello, then makes it the current bridge: the newest connection wins, as
/// a restarted ExaBGP starts a new bridge while the old one may not have noticed yet.
async fn handshake(stream: UnixStream, weak: Weak<Shared>) {
    let Some(timeout) = weak.upgrade().map(|s| s.timeout) else {
        return;
    };
    let (read, writer) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut buf = Vec::new();
    let hello = match tokio::time::timeout(timeout, read_line(&mut read, &mut buf)).await {
        Ok(Ok(Some(line))) if line.starts_with(HELLO) => line,
        Ok(Ok(Some(line))) => {
            tracing::warn!(first_line = %line.chars().take(80).collect::<String>(), "not an ExaBGP bridge; closing the connection");
            return;
        }
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
            tracing::warn!("a client of the ExaBGP socket sent no hello; closing the connection");
            return;
        }
    };
    let Some(shared) = weak.upgrade() else { return };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, lines) = mpsc::channel(LINES_BUFFER);
    let reader = tokio::spawn(read_answers(read, buf, tx, id, weak.clone()));
    let session = Session {
        id,
        writer,
        lines,
        _reader: AbortOnDrop(reader.abort_handle()),
        rib: None,
    };
    let mut slot = shared.session.lock().await;
    let previous = shared.bridge.borrow().clone();
    *slot = Some(session);
    shared.bridge.send_replace(Some(BridgeInfo {
        id,
        hello: hello.clone(),
    }));
    drop(slot);
    let bridge = hello.trim_start_matches(HELLO).trim();
    match previous {
        Some(old) => tracing::warn!(
            bridge,
            replaced = old.hello.trim_start_matches(HELLO).trim(),
            "ExaBGP bridge connected, replacing the previous one"
        ),
        None => tracing::info!(bridge, "ExaBGP bridge connected"),
    }
}

/// Forwards the bridge's lines to whoever holds the session; marks the bridge gone at the end.
async fn read_answers(
    mut read: tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    mut buf: Vec<u8>,
    tx: mpsc::Sender<String>,
    id: u64,
    shared: Weak<Shared>,
) {
    let mut overflowed = false;
    let why = loop {
        match read_line(&mut read, &mut buf).await {
            Ok(Some(line)) => match tx.try_send(line) {
                Ok(()) => overflowed = false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !overflowed {
                        tracing::warn!(
                            "ExaBGP writes more than is asked of it: remove event subscriptions \
                             (receive, neighbor-changes) from the api block of our process"
                        );
                    }
                    overflowed = true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break "session closed".to_string(),
            },
            Ok(None) => break "the bridge closed the connection (ExaBGP stopped?)".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    drop(tx);
    if let Some(shared) = shared.upgrade() {
        let gone = shared.bridge.send_if_modified(|b| {
            if b.as_ref().is_some_and(|b| b.id == id) {
                *b = None;
                true
            } else {
                false
            }
        });
        if gone {
            tracing::warn!(why, "ExaBGP bridge disconnected");
        }
    }
}

/// One `\n`-terminated line, without it; `None` at the end of the stream. Cancel-safe: a line
/// read in part stays in `buf` for the next call.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    read: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            return Ok(Some(line.trim_end_matches('\r').to_string()));
        }
        if buf.len() >= MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE} bytes"),
            ));
        }
        let limit = (MAX_LINE - buf.len()) as u64;
        let n = (&mut *read).take(limit).read_until(b'\n', buf).await?;
        if n == 0 {
            return Ok(None);
        }
    }
}

/// What ExaBGP holds for a route's prefix, as far as we are concerned.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Absent,
    Ours,
    Foreign,
}

fn classify(route: &Route, seen: Option<&Vec<RibPath>>) -> Seen {
    let seen = seen.map(Vec::as_slice).unwrap_or(&[]);
    if seen.iter().any(|p| route.matches(p)) {
        Seen::Ours
    } else if seen.iter().any(|p| p.prefix == route.prefix) {
        Seen::Foreign
    } else {
        Seen::Absent
    }
}

fn as_path(route: &Route) -> RibPath {
    RibPath {
        prefix: route.prefix,
        next_hop: Some(route.next_hop),
        communities: route.communities.clone(),
        large_communities: route.large_communities.clone(),
    }
}

#[async_trait]
impl Speaker for ExabgpSpeaker {
    fn name(&self) -> &'static str {
        "exabgp"
    }

    async fn announce(&self, route: &Route) -> Result<(), BgpError> {
        let command = text::announce(route)?;
        let route = Route {
            prefix: text::checked_prefix(route)?,
            ..route.clone()
        };
        let mut session = self.session().await?;
        if classify(&route, session.rib().await?.get(&route.prefix)) == Seen::Foreign {
            return Err(BgpError::ForeignRoute {
                prefix: route.prefix,
            });
        }
        // Re-announcing our identical route is a no-op in ExaBGP (it keeps what it sent).
        session.send(&command).await?;
        // ExaBGP replaces the path of the same prefix, for every neighbour of our process.
        session
            .rib()
            .await?
            .insert(route.prefix, vec![as_path(&route)]);
        Ok(())
    }

    async fn withdraw(&self, route: &Route) -> Result<Withdrawn, BgpError> {
        let command = text::withdraw(route)?;
        let route = Route {
            prefix: text::checked_prefix(route)?,
            ..route.clone()
        };
        let mut session = self.session().await?;
        match classify(&route, session.rib().await?.get(&route.prefix)) {
            Seen::Absent => Ok(Withdrawn::Absent),
            // ExaBGP withdraws by prefix: it would take the foreign path with it.
            Seen::Foreign => Ok(Withdrawn::LeftForeign),
            Seen::Ours => {
                session.send(&command).await?;
                session.rib().await?.remove(&route.prefix);
                Ok(Withdrawn::Removed)
            }
        }
    }

    async fn list(&self) -> Result<Option<Vec<RibPath>>, BgpError> {
        let mut session = self.session().await?;
        session.refresh_rib().await?;
        Ok(Some(
            session.rib().await?.values().flatten().cloned().collect(),
        ))
    }

    async fn health(&self) -> SpeakerHealth {
        let down = |detail: String| SpeakerHealth {
            backend: "exabgp",
            reachable: false,
            peers: Vec::new(),
            detail: Some(detail),
        };
        if self.shared.bridge.borrow().is_none() {
            return down(format!(
                "no ExaBGP bridge connected to {}",
                self.shared.socket.display()
            ));
        }
        let answer = match self.session().await {
            Ok(mut session) => session.send(text::SHOW_NEIGHBORS).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(lines) => {
                let peers = text::parse_neighbors(lines.iter().map(String::as_str));
                let detail = if peers.is_empty() {
                    Some("ExaBGP has no BGP neighbors configured".to_string())
                } else if !peers.iter().any(|p| p.state == "established") {
                    Some("no BGP session is established".to_string())
                } else {
                    None
                };
                SpeakerHealth {
                    backend: "exabgp",
                    reachable: true,
                    peers,
                    detail,
                }
            }
            Err(e) => down(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::Community;

    fn route(prefix: &str, nh: &str) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            next_hop: nh.parse().unwrap(),
            communities: vec![Community::new(65001, 777)],
            large_communities: vec![],
        }
    }

    /// Plays ExaBGP behind a bridge: answers `show adj-rib out` from its own RIB, `done` to
    /// announce and withdraw, as ExaBGP 4.2 does.
    async fn fake_exabgp(socket: PathBuf, rib: Arc<Mutex<Vec<String>>>) {
        let stream = loop {
            match UnixStream::connect(&socket).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{HELLO} pid=1 ppid=1 version=test\n").as_bytes())
            .await
            .unwrap();
        let mut read = tokio::io::BufReader::new(read);
        let mut buf = Vec::new();
        while let Ok(Some(cmd)) = read_line(&mut read, &mut buf).await {
            let mut out = Vec::new();
            if cmd == text::SHOW_RIB {
                for r in rib.lock().unwrap().iter() {
                    out.push(format!("neighbor 127.0.0.2 local-ip 127.0.0.1 {r}"));
                }
            } else if let Some(rest) = cmd.strip_prefix("announce route ") {
                let prefix = rest.split_whitespace().next().unwrap().to_string();
                let fam = if prefix.contains(':') { "ipv6" } else { "ipv4" };
                let mut rib = rib.lock().unwrap();
                rib.retain(|r| !r.contains(&format!(" {prefix} ")));
                rib.push(format!(
                    "{fam} unicast {}",
                    rest.replace('[', "[ ").replace(']', " ]")
                ));
            } else if let Some(rest) = cmd.strip_prefix("withdraw route ") {
                let prefix = rest.split_whitespace().next().unwrap().to_string();
                rib.lock()
                    .unwrap()
                    .retain(|r| !r.contains(&format!(" {prefix} ")));
            }
            out.push("done".into());
            for line in out {
                write
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .unwrap();
            }
        }
    }

    #[tokio::test]
    async fn announces_lists_and_withdraws_through_a_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/exabgp.sock");
        let speaker = ExabgpSpeaker::new(&socket, Duration::from_secs(2)).unwrap();
        let rib = Arc::new(Mutex::new(vec![
            // Someone else's route, same ExaBGP.
            "ipv4 unicast 198.51.101.0/24 next-hop 192.0.2.9 community 65000:1".to_string(),
        ]));
        tokio::spawn(fake_exabgp(socket.clone(), rib.clone()));

        let ours = route("198.51.100.0/24", "192.0.2.1");
        speaker.announce(&ours).await.unwrap();
        let listed = speaker.list().await.unwrap().unwrap();
        assert!(listed.iter().any(|p| ours.matches(p)), "{listed:?}");
        assert_eq!(listed.len(), 2);

        let foreign = route("198.51.101.0/24", "192.0.2.1");
        assert!(matches!(
            speaker.announce(&foreign).await,
            Err(BgpError::ForeignRoute { .. })
        ));
        assert_eq!(
            speaker.withdraw(&foreign).await.unwrap(),
            Withdrawn::LeftForeign
        );
        assert_eq!(speaker.withdraw(&ours).await.unwrap(), Withdrawn::Removed);
        assert_eq!(speaker.withdraw(&ours).await.unwrap(), Withdrawn::Absent);
        assert_eq!(rib.lock().unwrap().len(), 1, "the foreign route stays");
        assert!(speaker.health().await.reachable);
    }

    #[tokio::test]
    async fn without_a_bridge_calls_fail_as_unreachable_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let speaker =
            ExabgpSpeaker::new(&dir.path().join("x.sock"), Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let err = speaker
            .announce(&route("198.51.100.0/24", "192.0.2.1"))
            .await
            .unwrap_err();
        assert!(matches!(err, BgpError::Unreachable(m) if m.contains("no ExaBGP bridge")));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(
            speaker.list().await,
            Err(BgpError::Unreachable(_))
        ));
        assert!(!speaker.health().await.reachable);
    }

    #[tokio::test]
    async fn a_stray_client_is_not_taken_for_a_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("x.sock");
        let speaker = ExabgpSpeaker::new(&socket, Duration::from_millis(300)).unwrap();
        let mut stray = UnixStream::connect(&socket).await.unwrap();
        stray.write_all(b"hello there\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!speaker.health().await.reachable);
    }

    #[tokio::test]
    async fn a_socket_in_use_is_refused_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("x.sock");
        let first = ExabgpSpeaker::new(&socket, Duration::from_millis(300)).unwrap();
        assert!(ExabgpSpeaker::new(&socket, Duration::from_millis(300)).is_err());
        // A crash leaves the file behind with nobody listening.
        let stale = std::os::unix::net::UnixListener::bind(dir.path().join("y.sock")).unwrap();
        drop(stale);
        assert!(ExabgpSpeaker::new(&dir.path().join("y.sock"), Duration::from_millis(300)).is_ok());
        drop(first);
        assert!(!socket.exists(), "the socket is removed with the speaker");
        std::fs::write(dir.path().join("file"), "x").unwrap();
        assert!(ExabgpSpeaker::new(&dir.path().join("file"), Duration::from_millis(300)).is_err());
    }

    #[tokio::test]
    async fn silence_drops_the_connection_so_a_late_answer_cannot_confuse_the_next_command() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("x.sock");
        let speaker = ExabgpSpeaker::new(&socket, Duration::from_millis(300)).unwrap();
        let mut mute = UnixStream::connect(&socket).await.unwrap();
        mute.write_all(format!("{HELLO} pid=1\n").as_bytes())
            .await
            .unwrap();
        let err = speaker.list().await.unwrap_err();
        assert!(
            matches!(&err, BgpError::Unreachable(m) if m.contains("did not answer")),
            "{err}"
        );
        // The service closed it: the mute bridge sees the end of the stream.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), mute.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0 && String::from_utf8_lossy(&rest).contains(text::SHOW_RIB));
    }

    #[tokio::test]
    async fn the_newest_bridge_replaces_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("x.sock");
        let speaker = ExabgpSpeaker::new(&socket, Duration::from_secs(2)).unwrap();
        let mut old = UnixStream::connect(&socket).await.unwrap();
        old.write_all(format!("{HELLO} pid=1\n").as_bytes())
            .await
            .unwrap();
        // A restarted ExaBGP's bridge, while the old connection is still open.
        let rib = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(fake_exabgp(socket.clone(), rib));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let hello = speaker
                .shared
                .bridge
                .borrow()
                .as_ref()
                .map(|b| b.hello.clone());
            if hello.is_some_and(|h| h.contains("version=test")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the new bridge was not taken"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(speaker.list().await.unwrap(), Some(vec![]));
        // The old connection was closed by the service.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), old.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn read_line_is_bounded() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut r = tokio::io::BufReader::new(long.as_slice());
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf).await.is_err());
        let mut r = tokio::io::BufReader::new(&b"a\r\nb"[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf).await.unwrap().as_deref(),
            Some("a")
        );
        // A last line without its newline is not a line.
        assert_eq!(read_line(&mut r, &mut buf).await.unwrap(), None);
    }
}
