//! The client against fixed answers from a tiny HTTP server: shapes an independent
//! simulator, a proxy or a misrouted URL produce, which `pve-sim` (faithful to PVE) never
//! sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nimbus_proxmox::{ApiToken, ClientConfig, ErrorClass, PollBackoff, ProxmoxClient, PveError, TlsMode, Upid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One fixed answer: status line (`404 Not Found`) and body.
struct Answer {
    status: &'static str,
    body: &'static str,
}

fn answer(status: &'static str, body: &'static str) -> Answer {
    Answer { status, body }
}

/// Serves `routes` (exact path below `/api2/json`, query ignored) on 127.0.0.1 over plain
/// HTTP, one request per connection; anything else gets PVE's 501. Returns a client for it.
async fn serve(routes: Vec<(&'static str, Answer)>) -> ProxmoxClient {
    let routes: Arc<HashMap<&str, Answer>> = Arc::new(routes.into_iter().collect());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let target = head.split_whitespace().nth(1).unwrap_or_default();
                let path = target.split('?').next().unwrap_or_default().trim_start_matches("/api2/json");
                let (status, body) = match routes.get(path) {
                    Some(a) => (a.status, a.body),
                    None => ("501 Method not implemented", r#"{"data":null,"message":"Method not implemented\n"}"#),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    let token = ApiToken::parse("root@pam!ci=00000000-0000-0000-0000-000000000000").unwrap();
    let poll =
        PollBackoff { initial: Duration::from_millis(5), max: Duration::from_millis(20), factor: 2.0, jitter: 0.0 };
    let config = ClientConfig::new(format!("http://{addr}"), token, TlsMode::System)
        .allow_http(true)
        .timeout(Duration::from_secs(5))
        .task_poll(poll);
    ProxmoxClient::new(config).unwrap()
}

const UPID: &str = "UPID:pve1:000FF1FD:10F9374C:630D702C:qmstart:100:root@pam!ci:";

fn upid() -> Upid {
    Upid::parse(UPID).unwrap()
}

/// `/nodes/pve1/tasks/<upid>/...` as the client encodes it (`!` escaped).
fn task_path(tail: &str) -> &'static str {
    let upid = UPID.replace('!', "%21");
    Box::leak(format!("/nodes/pve1/tasks/{upid}/{tail}").into_boxed_str())
}

#[tokio::test]
async fn wait_task_needs_only_status_and_exitstatus() {
    // No upid, node, pid, pstart, starttime, type, id or user: a simulator that leaves
    // them out still ran the task.
    let client =
        serve(vec![(task_path("status"), answer("200 OK", r#"{"data":{"status":"stopped","exitstatus":"OK"}}"#))])
            .await;
    let outcome = client.wait_task(&upid(), Duration::from_secs(5)).await.unwrap();
    assert_eq!((outcome.exitstatus.as_str(), outcome.warnings), ("OK", 0));

    // Fields waiting does not read may be anything.
    let odd = r#"{"data":{"status":"stopped","exitstatus":"WARNINGS: 2","pid":-1,"pstart":"x","user":null}}"#;
    let client = serve(vec![(task_path("status"), answer("200 OK", odd))]).await;
    assert_eq!(client.wait_task(&upid(), Duration::from_secs(5)).await.unwrap().warnings, 2);

    // A failure still fails, with its log.
    let client = serve(vec![
        (
            task_path("status"),
            answer("200 OK", r#"{"data":{"status":"stopped","exitstatus":"VM 100 already running"}}"#),
        ),
        (
            task_path("log"),
            answer("200 OK", r#"{"data":[{"n":1,"t":"TASK ERROR: VM 100 already running"}],"total":1}"#),
        ),
    ])
    .await;
    match client.wait_task(&upid(), Duration::from_secs(5)).await {
        Err(PveError::TaskFailed { exitstatus, log_tail, .. }) => {
            assert_eq!(exitstatus, "VM 100 already running");
            assert_eq!(log_tail, ["TASK ERROR: VM 100 already running"]);
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_404_without_pve_message_is_not_a_vanished_guest() {
    let status = "/nodes/pve1/qemu/100/status/current";
    // A wrong base URL or a proxy's page.
    for body in
        ["<html><body><h1>404 Not Found</h1></body></html>", r#"{"message":"no Route matched with those values"}"#, ""]
    {
        let client = serve(vec![
            (status, answer("404 Not Found", body)),
            ("/nodes/pve1/qemu/100", answer("404 Not Found", body)),
        ])
        .await;
        let err = client.node("pve1").qemu(100).status().await.unwrap_err();
        assert!(matches!(err, PveError::NotProxmox { status: 404, .. }), "{err:?}");
        assert!(!err.is_not_found(), "{err}");
        assert_eq!(err.status(), None);
        assert_eq!(err.class(), ErrorClass::Permanent);
        let delete = client.node("pve1").qemu(100).delete(&Default::default()).await.unwrap_err();
        assert!(matches!(delete, PveError::NotProxmox { .. }), "{delete:?}");
        assert!(!delete.is_not_found(), "a delete must not take a misrouted request for success: {delete}");
    }

    // PVE's own words, in its envelope or its reason phrase, say the guest is gone.
    let text = "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist";
    let envelope = r#"{"data":null,"message":"Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist\n"}"#;
    for (line, body) in [
        ("404 Not Found", envelope),
        ("500 Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist", ""),
        ("404 Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist", ""),
    ] {
        let client = serve(vec![(status, answer(line, body))]).await;
        let err = client.node("pve1").qemu(100).status().await.unwrap_err();
        assert!(err.is_not_found(), "{line}: {err:?}");
        assert_eq!(err.pve_message(), Some(text));
    }
}

#[tokio::test]
async fn helpers_read_per_parameter_errors() {
    let taken =
        r#"{"data":null,"errors":{"vmid":"VM 100 already exists"},"message":"Parameter verification failed.\n"}"#;
    let client = serve(vec![("/cluster/nextid", answer("400 Parameter verification failed.", taken))]).await;
    let err = client.next_id(Some(100)).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert!(!err.is_not_found());

    // Some servers answer 500 with only `errors`.
    let clone = r#"{"data":null,"errors":{"newid":"unable to create VM 101: config file already exists"}}"#;
    let client = serve(vec![("/nodes/pve1/qemu/9000/clone", answer("500 Internal Server Error", clone))]).await;
    let err = client.node("pve1").qemu(9000).clone_to(&nimbus_proxmox::QemuClone::new(101)).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert_eq!(err.status(), Some(500));

    let missing = r#"{"data":null,"errors":{"snapname":"snapshot 'before' does not exist"},"message":"Parameter verification failed.\n"}"#;
    let client = serve(vec![(
        "/nodes/pve1/qemu/100/snapshot/before/rollback",
        answer("400 Parameter verification failed.", missing),
    )])
    .await;
    let err = client.node("pve1").qemu(100).rollback("before", false).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!err.is_already_exists());
}

#[tokio::test]
async fn listings_tolerate_out_of_range_numbers_field_by_field() {
    let nodes = r#"{"data":[{"node":"pve1","status":"online","mem":-1,"maxmem":68719476736,"maxcpu":8,"uptime":"-3","cpu":0.1},{"node":"pve2","status":"online","mem":1024,"maxcpu":99999999999}]}"#;
    let guests = r#"{"data":[{"vmid":100,"status":"running","mem":-4096,"maxmem":2147483648,"pid":-1,"name":"web"},{"vmid":"101","status":"stopped","uptime":0}]}"#;
    let storage = r#"{"data":[{"storage":"local","type":"dir","content":"iso","total":1000,"used":-5,"avail":"18446744073709551616"}]}"#;
    let resources = r#"{"data":[{"id":"qemu/100","type":"qemu","node":"pve1","vmid":100,"netin":-12,"maxdisk":10}]}"#;
    let client = serve(vec![
        ("/nodes", answer("200 OK", nodes)),
        ("/nodes/pve1/qemu", answer("200 OK", guests)),
        ("/nodes/pve1/storage", answer("200 OK", storage)),
        ("/cluster/resources", answer("200 OK", resources)),
    ])
    .await;

    let nodes = client.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!((nodes[0].mem, nodes[0].uptime), (None, None));
    assert_eq!((nodes[0].maxmem, nodes[0].maxcpu, nodes[0].status.as_str()), (Some(68_719_476_736), Some(8), "online"));
    assert_eq!((nodes[1].mem, nodes[1].maxcpu), (Some(1024), None));

    let guests = client.node("pve1").qemu_list().await.unwrap();
    assert_eq!(guests.len(), 2);
    assert_eq!((guests[0].vmid, guests[0].mem, guests[0].pid), (100, None, None));
    assert_eq!((guests[0].maxmem, guests[0].name.as_deref()), (Some(2_147_483_648), Some("web")));
    assert_eq!(guests[1].vmid, 101);

    let storage = client.node("pve1").storage_list(&Default::default()).await.unwrap();
    assert_eq!((storage[0].total, storage[0].used, storage[0].avail), (Some(1000), None, None));

    let resources = client.cluster_resources(None).await.unwrap();
    assert_eq!((resources[0].vmid, resources[0].netin, resources[0].maxdisk), (Some(100), None, Some(10)));
}

#[tokio::test]
async fn plain_http_is_refused_without_the_lab_allowance() {
    let token = ApiToken::parse("root@pam!ci=00000000-0000-0000-0000-000000000000").unwrap();
    let err = ProxmoxClient::new(ClientConfig::new("http://127.0.0.1:8006", token, TlsMode::System)).unwrap_err();
    assert!(matches!(err, PveError::Config(ref m) if m.contains("http://")), "{err}");
}
