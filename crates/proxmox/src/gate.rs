//! The request gate: an optional hook every HTTP request to PVE awaits before it is sent.
//!
//! `pveproxy` serves a cluster's whole API from a few worker processes; many callers at once
//! (a burst of instance actions spread over several worker processes) can saturate it and
//! slow the web UI and every other client down. A [`RequestGate`] set with
//! [`ClientConfig::request_gate`](crate::ClientConfig::request_gate) lets the caller pace the
//! client, e.g. with a rate cap shared by all processes (the workers keep theirs in Redis).
//!
//! * Every request passes the gate once, just before it is sent: API calls, each status poll
//!   of [`ProxmoxClient::wait_task`](crate::ProxmoxClient::wait_task) (a poll is a request
//!   like any other), task log reads, uploads and console websocket handshakes.
//! * The request timeout starts after the gate has opened: time spent waiting for the gate is
//!   not time pveproxy took.
//! * A caller that drops the call while it waits at the gate sends nothing.
//! * Without a gate (the default) requests are sent at once and nothing is allocated.

use std::fmt;

use futures::future::BoxFuture;

/// Decides when the next request may be sent. Shared by every clone of a client and called
/// concurrently, so implementations keep their state behind `&self`.
pub trait RequestGate: fmt::Debug + Send + Sync + 'static {
    /// Resolves when one request may go. It cannot fail: a gate whose own backend is down
    /// must decide by itself (wait, or let the request through) rather than fail the call.
    fn acquire(&self) -> BoxFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::{ApiToken, ClientConfig, Params, PollBackoff, ProxmoxClient, TlsMode, Upid};

    /// Counts acquisitions and lets a request through only for a permit the test adds.
    #[derive(Debug)]
    struct CountingGate {
        acquired: AtomicUsize,
        open: Semaphore,
    }

    impl RequestGate for CountingGate {
        fn acquire(&self) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                self.acquired.fetch_add(1, Ordering::SeqCst);
                self.open.acquire().await.unwrap().forget();
            })
        }
    }

    /// A server answering one request per connection with the next of `replies` (PVE's
    /// `data`); returns its address and how many requests it has read.
    async fn serve(replies: Vec<&'static str>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            for data in replies {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "connection closed before the request head ended");
                    head.extend_from_slice(&chunk[..n]);
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = format!(r#"{{"data":{data}}}"#);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        (addr, served)
    }

    fn client(addr: SocketAddr, gate: Arc<CountingGate>) -> ProxmoxClient {
        let token = ApiToken::parse("root@pam!ci=secret-value").unwrap();
        let poll =
            PollBackoff { initial: Duration::from_millis(5), max: Duration::from_millis(5), factor: 1.0, jitter: 0.0 };
        let config = ClientConfig::new(format!("http://{addr}"), token, TlsMode::System)
            .allow_http(true)
            .task_poll(poll)
            .request_gate(gate);
        ProxmoxClient::new(config).unwrap()
    }

    #[tokio::test]
    async fn nothing_is_sent_before_the_gate_opens() {
        let (addr, served) = serve(vec![r#"{"release":"8.4"}"#]).await;
        let gate = Arc::new(CountingGate { acquired: AtomicUsize::new(0), open: Semaphore::new(0) });
        let client = client(addr, gate.clone());
        let call = tokio::spawn(async move { client.get_json("/version", &Params::new()).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(gate.acquired.load(Ordering::SeqCst), 1, "the call waits at the gate");
        assert_eq!(served.load(Ordering::SeqCst), 0, "and has sent nothing");
        gate.open.add_permits(1);
        let version = call.await.unwrap().unwrap();
        assert_eq!(version["release"], "8.4");
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn every_task_poll_passes_the_gate() {
        let running = r#"{"status":"running"}"#;
        let (addr, served) = serve(vec![running, running, r#"{"status":"stopped","exitstatus":"OK"}"#]).await;
        let gate = Arc::new(CountingGate { acquired: AtomicUsize::new(0), open: Semaphore::new(100) });
        let upid = Upid::parse("UPID:pve1:000FF1FD:10F9374C:630D702C:qmstart:100:root@pam!ci:").unwrap();
        let outcome = client(addr, gate.clone()).wait_task(&upid, Duration::from_secs(10)).await.unwrap();
        assert_eq!(outcome.exitstatus, "OK");
        assert_eq!(served.load(Ordering::SeqCst), 3);
        assert_eq!(gate.acquired.load(Ordering::SeqCst), 3, "one acquisition per poll");
    }
}
