//! portpicker's portserver protocol (`PORTSERVER_ADDRESS`): a client connects to the
//! Unix socket, writes its pid and a newline, and reads a port and a newline. The port is
//! leased to that pid (pid + start time, as every watched lease): freed when that process
//! exits, however it exits. A peer of another user (`SO_PEERCRED`) gets nothing.

use std::sync::Arc;
use std::time::Duration;

use portmgr::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::State;
use crate::listen::PortserverListener;

/// How long a client may take to send its pid.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve(l: PortserverListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = l.listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    if let Err(msg) = one(stream, &state).await {
                        eprintln!("portmgr serve: portserver client: {msg}");
                    }
                });
            }
        }
    }
}

/// Serve one connection: pid in, port out. On any failure the client gets no port (the
/// connection closes), which portpicker's client reads as "no port from the server".
async fn one(mut stream: UnixStream, state: &Arc<State>) -> Result<(), String> {
    let cred = stream.peer_cred().map_err(|e| format!("SO_PEERCRED: {e}"))?;
    if !state.guard.allows_uid(cred.uid()) {
        return Err(format!("refused uid {}: this server serves only its own user (and root)", cred.uid()));
    }
    let mut buf = Vec::with_capacity(32);
    let read = async {
        let mut byte = [0u8; 64];
        loop {
            let n = stream.read(&mut byte).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&byte[..n]);
            if buf.contains(&b'\n') || buf.len() > 32 {
                break;
            }
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.map_err(|_| "no pid within 5 s".to_string())??;
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let pid: u32 = std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("{:?} is not a pid", String::from_utf8_lossy(line)))?;
    // On this worker, the runtime told it blocks (see rest::blocking).
    let port = tokio::task::block_in_place(|| {
        let lease = state.reg.allocate(&Request::new().watch_pid(pid))?;
        let port = lease.port();
        lease.keep()?;
        Ok::<u16, portmgr::Error>(port)
    })
    .map_err(|e| e.to_string())?;
    stream.write_all(format!("{port}\n").as_bytes()).await.map_err(|e| e.to_string())?;
    let _ = stream.shutdown().await;
    Ok(())
}
