//! The accept loop: HTTP/1 connections with a deadline for the request headers and the
//! body, and a bound on how many are open at once, so that slow or idle clients cannot hold
//! every file descriptor.
//!
//! `axum::serve` has neither timeouts nor a connection limit, so the loop is written here on
//! hyper's connection builder (the same one `axum::serve` uses):
//! - hyper closes a connection whose headers do not arrive within `header_timeout_seconds`;
//! - [`Deadline`] fails a request body still arriving after `body_timeout_seconds`;
//! - at most `max_connections` connections are open (kept below the process's
//!   file-descriptor limit). A new client arriving when all are taken takes the place of the
//!   oldest connection that has no request in flight (a client still dribbling its headers,
//!   or an idle keep-alive); when every connection is busy with a request, the new client is
//!   turned away. So `/health` is answered at once even while hundreds of connections
//!   stall.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time allowed for a request's headers.
    pub header_timeout: Duration,
    /// Time allowed for a request's body once its headers arrived.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// File descriptors kept free for everything that is not a client connection (the store,
/// model files, log output, the listener itself).
const RESERVED_FDS: usize = 32;

/// The connection limit actually used: the configured one, lowered to fit under the soft
/// limit of open files.
pub fn effective_max_connections(configured: usize) -> usize {
    let fd_limit = open_file_limit().unwrap_or(usize::MAX);
    configured.min(fd_limit.saturating_sub(RESERVED_FDS)).max(1)
}

#[cfg(unix)]
fn open_file_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then(|| usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<usize> {
    None
}

/// One open connection as the loop tracks it.
struct Open {
    in_flight: Arc<AtomicUsize>,
    close: oneshot::Sender<()>,
}

/// Counts a request in flight for as long as it lives (also when it is cancelled).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request body that fails once its deadline has passed.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    seconds: f64,
}

/// The message a body that came too slowly fails with (the handlers turn it into a 408).
pub(crate) const BODY_TIMEOUT: &str = "the request body did not arrive in time";

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(format!(
                "{BODY_TIMEOUT} ({} s, body_timeout_seconds in [serve])",
                this.seconds
            )))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let max = effective_max_connections(limits.max_connections);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut open: VecDeque<Open> = VecDeque::new();
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a client gone before accept: wait, go on.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        open.retain(|c| !c.close.is_closed());
        if open.len() >= max {
            match open
                .iter()
                .position(|c| c.in_flight.load(Ordering::SeqCst) == 0)
            {
                Some(i) => {
                    let shed = open.remove(i).expect("index from position");
                    let _ = shed.close.send(());
                    // Let its task close the socket before the next accept needs the
                    // descriptor.
                    tokio::task::yield_now().await;
                }
                None => {
                    tracing::warn!(
                        max_connections = max,
                        "every connection is busy with a request; turning a new client away"
                    );
                    drop(stream);
                    continue;
                }
            }
        }
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (close_tx, close_rx) = oneshot::channel::<()>();
        open.push_back(Open {
            in_flight: in_flight.clone(),
            close: close_tx,
        });
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let guard = InFlight::new(&in_flight);
                    let mut app = app.clone();
                    let (parts, incoming) = req.into_parts();
                    let body = Body::new(Deadline {
                        inner: Body::new(incoming),
                        sleep: Box::pin(tokio::time::sleep(limits.body_timeout)),
                        seconds: limits.body_timeout.as_secs_f64(),
                    });
                    let req = axum::extract::Request::from_parts(parts, body);
                    async move {
                        let _guard = guard;
                        tower_service::Service::call(&mut app, req).await
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut close_rx = close_rx;
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = &mut close_rx => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(30), conn.as_mut()).await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
