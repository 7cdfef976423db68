//! The control socket's server: on a thread (and runtime) of its own, so a deny storm that keeps
//! the event loop draining the ring buffer never delays a CLI waiting for its answer.
use std::{fs, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::{
    control::{self, Response},
    requests::{self, Client},
};
use crate::{bpf::Bpf, paths::CONTROL_SOCKET};

/// How long a control client gets to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests being carried out get, at shutdown, to finish and be answered.
const CONTROL_GRACE: Duration = Duration::from_secs(10);

/// The control socket's server thread.
pub struct ControlServer {
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

impl ControlServer {
    pub fn start(
        listener: std::os::unix::net::UnixListener,
        records: mpsc::UnboundedSender<serde_json::Value>,
        bpf: Bpf,
    ) -> Result<Self> {
        let (stop, stop_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the control socket's runtime")?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                runtime.block_on(serve_controls(listener, records, stop_rx, bpf));
                // Dropping the runtime waits for requests still being carried out.
                drop(runtime);
                let _ = done_tx.send(());
            })
            .context("cannot start the control socket's thread")?;
        Ok(Self { stop, done })
    }

    /// Stops accepting; resolves once the requests already read are carried out.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// Accepts control clients until told to stop, then gives the requests it has read
/// [`CONTROL_GRACE`] to be answered.
async fn serve_controls(
    listener: std::os::unix::net::UnixListener,
    records: mpsc::UnboundedSender<serde_json::Value>,
    mut stop: oneshot::Receiver<()>,
    bpf: Bpf,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "enforcer: cannot listen on {}: {err}; the CLI changes policies itself",
                CONTROL_SOCKET
            );
            let _ = fs::remove_file(CONTROL_SOCKET);
            return;
        }
    };
    // Each control task holds a sender; `recv` answers `None` once every one has finished.
    let (alive, mut finished) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_control(stream, records.clone(), alive.clone(), bpf));
                }
                Err(err) => {
                    eprintln!("enforcer: cannot accept a client on {}: {err}", CONTROL_SOCKET);
                }
            },
        }
    }
    drop((listener, alive));
    let _ = tokio::time::timeout(CONTROL_GRACE, finished.recv()).await;
}

/// Answers one control client: reads its request line, refuses it unless the peer is root
/// (`SO_PEERCRED`), carries it out on a blocking thread under the state lock, queues the state
/// records for stdout and writes the answer. A request that was read is carried out fully even if
/// its client goes away meanwhile.
async fn serve_control(
    stream: UnixStream,
    records: mpsc::UnboundedSender<serde_json::Value>,
    _alive: mpsc::Sender<()>,
    bpf: Bpf,
) {
    let peer = stream.peer_cred();
    let (from_client, mut to_client) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(from_client.take(control::MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let response = match peer {
        Ok(cred) if cred.uid() == 0 => match control::decode(&line) {
            Ok(request) => {
                let client = Client {
                    uid: cred.uid(),
                    pid: cred.pid(),
                };
                match tokio::task::spawn_blocking(move || requests::execute(bpf, request, client))
                    .await
                {
                    Ok((response, changes)) => {
                        for record in changes {
                            let _ = records.send(record);
                        }
                        response
                    }
                    Err(err) => Response::internal(format!(
                        "the enforcer daemon failed while carrying out the request: {err}"
                    )),
                }
            }
            Err(refusal) => refusal,
        },
        Ok(cred) => {
            eprintln!(
                "enforcer: refused a request on {} from uid {} (pid {}): only root may use it",
                CONTROL_SOCKET,
                cred.uid(),
                cred.pid()
                    .map_or_else(|| "?".to_owned(), |pid| pid.to_string())
            );
            Response::not_privileged()
        }
        Err(_) => Response::not_privileged(),
    };
    let _ = to_client.write_all(response.line().as_bytes()).await;
}
