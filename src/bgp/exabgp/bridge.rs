//! `fnm-escalator exabgp-bridge --socket PATH`: the program ExaBGP runs as its API process. Every
//! line it reads from the service's Unix socket is a command for ExaBGP (written to stdout);
//! every line ExaBGP writes to its stdin (`done`, `error`, `show` output) goes back to the service.
//! It never exits while ExaBGP runs (ExaBGP gives up after a few quick respawns): when the
//! service is away it drains stdin and reconnects with backoff. It exits when stdin closes
//! (ExaBGP stopped or died) and on SIGTERM, since ExaBGP 4.2 does not always stop its processes.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::text::is_ack;
use super::{read_line, HELLO, MAX_LINE};

const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A service that does not take a line within this long is treated as gone, so the bridge
/// never stops draining ExaBGP (whose writes to us block its whole reactor).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const CHANNEL: usize = 1024;

/// Why [`run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// ExaBGP closed our stdin (or stopped reading our stdout): it stopped.
    ExabgpGone,
}

/// The process: a small runtime, stdin and stdout on threads of their own (they block), SIGTERM.
pub fn main(socket: &Path) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        let (from_exabgp, to_exabgp) = stdio();
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    log(&format!("cannot handle SIGTERM: {e}"));
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            Ending::ExabgpGone = run(socket, from_exabgp, to_exabgp) => {
                log("ExaBGP closed stdin; exiting");
            }
            _ = term.recv() => log("SIGTERM; exiting"),
        }
        ExitCode::SUCCESS
    });
    // The stdin thread may sit in a blocking read: do not wait for it.
    rt.shutdown_background();
    code
}

/// Lines from stdin, and a sink whose lines go to stdout (each flushed at once).
fn stdio() -> (mpsc::Receiver<String>, mpsc::Sender<String>) {
    let (in_tx, in_rx) = mpsc::channel::<String>(CHANNEL);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if in_tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (out_tx, mut out_rx) = mpsc::channel::<String>(CHANNEL);
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = out_rx.blocking_recv() {
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break;
            }
        }
    });
    (in_rx, out_tx)
}

/// Relays between ExaBGP (`from_exabgp`, `to_exabgp`) and the service at `socket` until ExaBGP
/// is gone; reconnects to the service for as long as it takes.
pub async fn run(
    socket: &Path,
    mut from_exabgp: mpsc::Receiver<String>,
    to_exabgp: mpsc::Sender<String>,
) -> Ending {
    // ExaBGP acknowledges every command once, in order. Commands relayed over a connection that
    // has ended are still acknowledged later: those acks must not reach the next connection,
    // where the service would take them for the answer to its own command.
    let mut owed: u64 = 0;
    let mut backoff = BACKOFF_INITIAL;
    let mut failures: u64 = 0;
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => {
                log(&format!("connected to {}", socket.display()));
                failures = 0;
                backoff = BACKOFF_INITIAL;
                match session(stream, &mut from_exabgp, &to_exabgp, &mut owed).await {
                    Ok(()) => return Ending::ExabgpGone,
                    Err(why) => log(&format!("lost the service: {why}; reconnecting")),
                }
            }
            Err(e) => {
                failures += 1;
                // The first failure, then about once a minute at the longest backoff.
                if failures == 1 || failures.is_multiple_of(12) {
                    log(&format!(
                        "cannot connect to {} ({e}); retrying",
                        socket.display()
                    ));
                }
            }
        }
        let until = Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                line = from_exabgp.recv() => match line {
                    None => return Ending::ExabgpGone,
                    Some(line) => {
                        if is_ack(&line) && owed > 0 {
                            owed -= 1;
                        }
                        // Anything else is for a service that is not there.
                    }
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection. `Ok` when ExaBGP is gone, `Err` when the service is.
async fn session(
    stream: UnixStream,
    from_exabgp: &mut mpsc::Receiver<String>,
    to_exabgp: &mpsc::Sender<String>,
    owed: &mut u64,
) -> Result<(), String> {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let hello = format!(
        "{HELLO} pid={} ppid={} version={}",
        std::process::id(),
        std::os::unix::process::parent_id(),
        env!("CARGO_PKG_VERSION")
    );
    send(&mut write, &hello).await?;
    // Commands of this connection not acknowledged yet.
    let mut outstanding: u64 = 0;
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            line = from_exabgp.recv() => {
                let Some(line) = line else { return Ok(()) };
                if is_ack(&line) {
                    if *owed > 0 {
                        *owed -= 1;
                        continue;
                    }
                    outstanding = outstanding.saturating_sub(1);
                }
                if let Err(e) = send(&mut write, &line).await {
                    *owed += outstanding;
                    return Err(e);
                }
            }
            command = read_line(&mut read, &mut buf) => match command {
                Ok(Some(command)) => {
                    if command.trim().is_empty() {
                        continue;
                    }
                    if command.chars().any(char::is_control) {
                        log(&format!("dropping a command with control characters: {command:?}"));
                        continue;
                    }
                    outstanding += 1;
                    if to_exabgp.send(command).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => {
                    *owed += outstanding;
                    return Err("the service closed the connection".into());
                }
                Err(e) => {
                    *owed += outstanding;
                    return Err(e.to_string());
                }
            },
        }
    }
}

async fn send(write: &mut OwnedWriteHalf, line: &str) -> Result<(), String> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    if bytes.len() > MAX_LINE {
        // Never expected from ExaBGP; the service would refuse it and drop the connection.
        bytes.truncate(MAX_LINE - 1);
        bytes.push(b'\n');
    }
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("the service took no data for {WRITE_TIMEOUT:?}")),
    }
}

/// One line on stderr, which ExaBGP passes through to its own output.
fn log(message: &str) {
    eprintln!(
        "fnm-escalator exabgp-bridge[{}]: {message}",
        std::process::id()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    struct Fixture {
        _dir: tempfile::TempDir,
        listener: UnixListener,
        to_bridge: mpsc::Sender<String>,
        from_bridge: mpsc::Receiver<String>,
        task: tokio::task::JoinHandle<Ending>,
    }

    /// A bridge in-process, with the test playing ExaBGP (the channels) and the service (the
    /// listener).
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (to_bridge, rx) = mpsc::channel(16);
        let (tx, from_bridge) = mpsc::channel(16);
        let task = tokio::spawn(async move { run(&path, rx, tx).await });
        Fixture {
            _dir: dir,
            listener,
            to_bridge,
            from_bridge,
            task,
        }
    }

    async fn accept(
        l: &UnixListener,
    ) -> (
        tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
        OwnedWriteHalf,
    ) {
        let (s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
        let (r, w) = s.into_split();
        let mut lines = tokio::io::BufReader::new(r).lines();
        let hello = lines.next_line().await.unwrap().unwrap();
        assert!(hello.starts_with(HELLO), "{hello}");
        (lines, w)
    }

    #[tokio::test]
    async fn relays_both_ways_and_ends_with_stdin() {
        let mut f = fixture();
        let (mut lines, mut w) = accept(&f.listener).await;
        w.write_all(b"announce route 198.51.100.0/24 next-hop 192.0.2.1\n")
            .await
            .unwrap();
        assert_eq!(
            f.from_bridge.recv().await.unwrap(),
            "announce route 198.51.100.0/24 next-hop 192.0.2.1"
        );
        f.to_bridge.send("done".into()).await.unwrap();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "done");
        drop(f.to_bridge);
        assert_eq!(f.task.await.unwrap(), Ending::ExabgpGone);
    }

    #[tokio::test]
    async fn late_acks_of_a_lost_connection_never_reach_the_next() {
        let mut f = fixture();
        let (_lines, mut w) = accept(&f.listener).await;
        w.write_all(b"announce route 198.51.100.0/24 next-hop 192.0.2.1\n")
            .await
            .unwrap();
        f.from_bridge.recv().await.unwrap();
        // The service goes away before ExaBGP answers.
        drop((_lines, w));
        let (mut lines, mut w) = accept(&f.listener).await;
        // ExaBGP's late `done` for the first command is swallowed ...
        f.to_bridge.send("done".into()).await.unwrap();
        w.write_all(b"withdraw route 198.51.100.0/24\n")
            .await
            .unwrap();
        assert_eq!(
            f.from_bridge.recv().await.unwrap(),
            "withdraw route 198.51.100.0/24"
        );
        // ... and the answer to the new command arrives as the first line.
        f.to_bridge.send("error".into()).await.unwrap();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "error");
        f.task.abort();
    }
}
