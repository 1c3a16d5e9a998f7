//! The HTTP listener: accepts connections and serves the router over HTTP/1.1 with the limits
//! that keep one client, or many, from taking the API down.
//!
//! * **Header-read timeout**: a request's headers must arrive within
//!   [`ConnectionLimits::header_read_timeout`], counted from when the connection is ready for
//!   them (also between requests on a kept-alive connection); a client trickling header lines
//!   is disconnected.
//! * **Idle timeout**: a connection on which nothing is read or written for
//!   [`ConnectionLimits::idle_timeout`] is closed (a stalled body upload, a client that stopped
//!   reading). Event streams write a keep-alive comment every 15 s, so they stay open.
//! * **Connection caps**: at most [`ConnectionLimits::max_connections`] open connections, and
//!   [`ConnectionLimits::max_connections_per_client`] per client address. A connection over a
//!   cap is answered at once (`503 SERVICE_UNAVAILABLE`, or `429 RATE_LIMITED` for the
//!   per-client cap, with `Retry-After`) and closed, so a flood costs a file descriptor for
//!   microseconds rather than holding one until the kernel's limit.
//! * **Accept errors** (the process out of file descriptors, say) are backed off, doubling from
//!   10 ms to 1 s, instead of spinning; the open-file limit is raised at start
//!   ([`raise_open_file_limit`]).
//!
//! The per-client cap counts the TCP peer: behind a reverse proxy all clients share the
//! proxy's address, so set it at least as high as the proxy's connection pool.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The tunables (see the module documentation and the configuration table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `HEADER_READ_TIMEOUT_SECS`.
    pub header_read_timeout: Duration,
    /// `IDLE_TIMEOUT_SECS`.
    pub idle_timeout: Duration,
    /// `MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_CLIENT`.
    pub max_connections_per_client: usize,
    /// `NOFILE_LIMIT`: the soft open-file limit asked for at start.
    pub nofile_limit: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_client: 256,
            nofile_limit: 65_536,
        }
    }
}

/// How long open connections get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);

/// Raises the soft open-file limit towards `wanted` (never above the hard limit). Returns the
/// limit in force afterwards.
pub fn raise_open_file_limit(wanted: u64) -> io::Result<u64> {
    rlimit::increase_nofile_limit(wanted)
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Gauge {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Full,
    ClientFull,
}

/// A connection counted in the [`Gauge`] until dropped.
struct Slot {
    gauge: Arc<Mutex<Gauge>>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut gauge = self.gauge.lock();
        gauge.total -= 1;
        if let Some(n) = gauge.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                gauge.per_client.remove(&self.client);
            }
        }
    }
}

fn take_slot(gauge: &Arc<Mutex<Gauge>>, client: IpAddr, limits: &ConnectionLimits) -> Result<Slot, Refusal> {
    let mut g = gauge.lock();
    if g.total >= limits.max_connections {
        return Err(Refusal::Full);
    }
    let mine = g.per_client.entry(client).or_insert(0);
    if *mine >= limits.max_connections_per_client {
        return Err(Refusal::ClientFull);
    }
    *mine += 1;
    g.total += 1;
    Ok(Slot { gauge: gauge.clone(), client })
}

/// The whole answer to a refused connection, in the API's envelope (no request was read, so
/// the request id is made here).
fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let (status, code, message) = match refusal {
        Refusal::Full => ("503 Service Unavailable", "SERVICE_UNAVAILABLE", "the server is at its connection limit"),
        Refusal::ClientFull => ("429 Too Many Requests", "RATE_LIMITED", "too many open connections from this address"),
    };
    let request_id = uuid::Uuid::now_v7().to_string();
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "details": null},
        "meta": {"requestId": request_id, "timestamp": chrono::Utc::now()},
    })
    .to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\nx-request-id: {request_id}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// (at most 30 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let gauge = Arc::new(Mutex::new(Gauge::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // Reap finished connections so the set does not grow with every one ever served.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE), or out of memory: retrying at once
                // would spin; open connections finishing is what frees the resource.
                tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = peer.ip().to_canonical();
        match take_slot(&gauge, client, &limits) {
            Ok(slot) => {
                tasks.spawn(serve_connection(stream, peer, app.clone(), limits.clone(), slot, stop_rx.clone()));
            }
            Err(refusal) => {
                tracing::warn!(client.ip = %client, ?refusal, "connection refused: over the connection limit");
                tasks.spawn(refuse(stream, refusal));
            }
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = tasks.len(), "shutdown: connections still open after the drain period; closing them");
        tasks.abort_all();
    }
    Ok(())
}

/// Errors of one connection that arrived broken: nothing to back off from.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let answer = refusal_response(refusal);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    _slot: Slot,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(request.map(Body::new)).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(result),
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            log_end(connection.await);
        }
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Timeouts and clients going away are normal ends of a connection.
        tracing::debug!(error = %e, "connection closed with an error");
    }
}

/// A stream that fails with `TimedOut` once nothing has been read or written for `idle`.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn progressed(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Follows one operation's outcome: progress moves the deadline; while it is pending, the
    /// deadline having passed makes it `TimedOut` (polling the deadline wakes the task then).
    fn follow<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>, moved: bool) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                if moved {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let moved = matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        self.follow(cx, poll, moved)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, data);
        let moved = matches!(poll, Poll::Ready(Ok(n)) if n > 0);
        self.follow(cx, poll, moved)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let moved = matches!(poll, Poll::Ready(Ok(n)) if n > 0);
        self.follow(cx, poll, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_client: usize) -> ConnectionLimits {
        ConnectionLimits { max_connections: total, max_connections_per_client: per_client, ..Default::default() }
    }

    #[test]
    fn slots_are_capped_in_all_and_per_client_and_given_back() {
        let gauge = Arc::new(Mutex::new(Gauge::default()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let l = limits(3, 2);
        let a1 = take_slot(&gauge, a, &l).unwrap();
        let _a2 = take_slot(&gauge, a, &l).unwrap();
        assert_eq!(take_slot(&gauge, a, &l).err(), Some(Refusal::ClientFull));
        let _b1 = take_slot(&gauge, b, &l).unwrap();
        assert_eq!(take_slot(&gauge, b, &l).err(), Some(Refusal::Full));
        drop(a1);
        let _a3 = take_slot(&gauge, a, &l).expect("a closed connection frees its slot");
        assert_eq!(gauge.lock().total, 3);
        assert_eq!(gauge.lock().per_client[&a], 2);
    }

    #[test]
    fn refusals_are_complete_http_answers_in_the_envelope() {
        let text = String::from_utf8(refusal_response(Refusal::ClientFull)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "RATE_LIMITED");
        assert!(String::from_utf8(refusal_response(Refusal::Full)).unwrap().starts_with("HTTP/1.1 503 "));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_times_out_and_a_busy_one_does_not() {
        use tokio::io::AsyncReadExt;
        let (client, server) = tokio::io::duplex(64);
        let mut watched = IdleTimeout::new(server, Duration::from_secs(5));
        let mut client = client;
        let writer = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut buf = [0u8; 1];
        for _ in 0..3 {
            // Each byte arrives within the idle time of the one before.
            watched.read_exact(&mut buf).await.unwrap();
        }
        let _client = writer.await.unwrap();
        let err = watched.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
