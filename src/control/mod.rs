//! The control plane beside the dataplane: the control socket and its
//! `cpumapd ctl` client. (The Prometheus endpoint, the other service thread,
//! is `telemetry::exporter`.)
//!
//! # General idea
//!
//! Both services (this socket and the metrics endpoint) run on ordinary threads, never on an lcore, and reach the
//! pipeline only through [`Handle`]: they read counters (each block has one
//! writer, the lcore) and change the map through [`CpuMap`]'s writer side,
//! which never waits for an lcore. A slow, hostile or vanished client can
//! cost a control thread, not a frame.
//!
//! Control socket: a Unix stream socket created with mode 0600 (umask set
//! around `bind`, so there is no window where others could connect), so
//! only its owner (and root) can connect. One thread per connection, at most
//! [`MAX_CLIENTS`]; newline-delimited JSON ([`proto`]); lines longer than
//! [`proto::MAX_LINE`] get E2BIG and the connection is closed; an idle
//! connection is closed after [`IDLE_TIMEOUT`], a client that does not read
//! its replies after [`WRITE_TIMEOUT`].
//!
//! [`CpuMap`]: crate::cpumap::CpuMap

pub mod ctl;
pub mod proto;
pub mod state;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::lcore::Handle;
use proto::{CtlError, MAX_LINE, Reply};
use state::StateStore;

/// Connections served at once; more get EBUSY.
pub const MAX_CLIENTS: usize = 16;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A reply that cannot be written within this long closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often blocked service threads look at their stop flag.
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
/// The control socket could not be opened.
pub enum ControlError {
    /// Another cpumapd answers on this socket.
    #[error(
        "control socket {path}: another cpumapd is listening there; stop it or pass --control PATH"
    )]
    InUse {
        /// The socket path.
        path: String,
    },
    /// Something that is not a socket is at the path.
    #[error(
        "control socket {path}: the path exists and is not a socket; remove it or pass --control PATH"
    )]
    NotSocket {
        /// The path.
        path: String,
    },
    /// The socket could not be bound.
    #[error(
        "control socket {path}: {why}; pass --control PATH (a writable directory) or --control off"
    )]
    Bind {
        /// The socket path.
        path: String,
        /// Why it failed.
        why: String,
    },
}

/// A running control socket. Dropping it stops accepting, tells connection
/// threads to close, and removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket nobody listens on) with mode
    /// 0600 and starts serving `handle`; nothing is kept across restarts.
    pub fn start(path: &Path, handle: Arc<Handle>) -> Result<Self, ControlError> {
        Self::start_with_state(path, handle, Arc::new(StateStore::disabled()))
    }

    /// [`start`](Self::start), with every change going through `state`
    /// (saved durably before its reply, `ctl state show|reset`).
    pub fn start_with_state(
        path: &Path,
        handle: Arc<Handle>,
        state: Arc<StateStore>,
    ) -> Result<Self, ControlError> {
        let shown = path.display().to_string();
        match std::fs::symlink_metadata(path) {
            Ok(md) if md.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError::InUse { path: shown });
                }
                // Stale: left by a cpumapd that did not exit cleanly.
                std::fs::remove_file(path).map_err(|e| ControlError::Bind {
                    path: shown.clone(),
                    why: format!("cannot remove stale socket: {e}"),
                })?;
            }
            Ok(_) => return Err(ControlError::NotSocket { path: shown }),
            Err(_) => {}
        }
        // umask 0177 around bind: the socket is born 0600. The umask is
        // process-wide; nothing else creates files while services start.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| ControlError::Bind {
            path: shown.clone(),
            why: e.to_string(),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ControlError::Bind {
                path: shown.clone(),
                why: e.to_string(),
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ctl-accept".into())
                .spawn(move || accept_loop(listener, handle, state, stop))
                .map_err(|e| ControlError::Bind {
                    path: shown,
                    why: e.to_string(),
                })?
        };
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            accept: Some(accept),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Decrements the connection count when a connection thread ends, however
/// it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn accept_loop(
    listener: UnixListener,
    handle: Arc<Handle>,
    state: Arc<StateStore>,
    stop: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(TICK);
                continue;
            }
            // ECONNABORTED, EMFILE...: keep serving the others.
            Err(_) => {
                std::thread::sleep(TICK);
                continue;
            }
        };
        if stream.set_nonblocking(false).is_err()
            || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
            || stream.set_read_timeout(Some(TICK)).is_err()
        {
            continue;
        }
        if active.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
            active.fetch_sub(1, Ordering::Relaxed);
            let busy = CtlError::new(
                "EBUSY",
                format!("{MAX_CLIENTS} control clients are connected; try again"),
            );
            let _ = (&stream).write_all(Reply::from_result(Err(busy)).to_line().as_bytes());
            continue;
        }
        let slot = Slot(active.clone());
        let (handle, state, stop) = (handle.clone(), state.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("ctl-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve(stream, &handle, &state, &stop);
            });
        // On spawn failure the closure (and its slot) is dropped: the count
        // goes back down and the client sees the connection close.
        drop(spawned);
    }
}

/// Serves one connection until EOF, an error, idle timeout, an over-long
/// line or server stop.
fn serve(mut stream: UnixStream, handle: &Handle, state: &StateStore, stop: &AtomicBool) {
    let mut pending: Vec<u8> = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let mut last_input = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // Answer every complete line already received.
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let reply =
                Reply::from_result(proto::parse(line).and_then(|r| state.commit(handle, r)));
            if stream.write_all(reply.to_line().as_bytes()).is_err() {
                return; // vanished or not reading
            }
        }
        if pending.len() > MAX_LINE {
            let e = CtlError::new(
                "E2BIG",
                format!("request line longer than {MAX_LINE} bytes; closing"),
            );
            let _ = stream.write_all(Reply::from_result(Err(e)).to_line().as_bytes());
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                last_input = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last_input.elapsed() >= IDLE_TIMEOUT {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
