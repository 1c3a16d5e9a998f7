//! The client against `pve-sim`: failure paths, their classification, and TLS modes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{WAIT, client_for, clone_vm, debian_template, start, start_with, try_client_for, wait_ok};
use nimbus_proxmox::{
    ApiToken, ClientConfig, ErrorClass, Params, ProxmoxClient, PveError, QemuConfigUpdate, QemuOptions, ResourceType,
    SnapshotCreate, TlsMode,
};
use pve_sim::SimConfig;

#[tokio::test]
async fn unknown_guest_is_a_permanent_not_found() {
    let s = start().await;
    let err = s.client.node("pve1").qemu(99999).status().await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.pve_message(), Some("Configuration file 'nodes/pve1/qemu-server/99999.conf' does not exist"));
    assert!(err.is_not_found());
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.is_transient());

    let err = s.client.node("pve1").lxc(99998).config().await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.pve_message(), Some("Configuration file 'nodes/pve1/lxc/99998.conf' does not exist"));
    assert_eq!(err.class(), ErrorClass::Permanent);

    let err = s.client.node("pve1").qemu(99999).start().await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn parameter_verification_errors_map_into_errors() {
    let s = start().await;
    let template = debian_template(&s.client, "pve1").await;

    // Handler-raised: nextid of a used id.
    let err = s.client.next_id(Some(template)).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.pve_message(), Some("Parameter verification failed."));
    assert_eq!(err.param_errors().unwrap()["vmid"], format!("VM {template} already exists"));
    assert_eq!(err.class(), ErrorClass::Permanent);

    // Schema validator texts.
    let get = |params: Params| {
        let c = s.client.clone();
        async move { c.get_json("/cluster/nextid", &params).await.unwrap_err() }
    };
    let err = get(Params::new().with("vmid", "abc")).await;
    assert_eq!(err.param_errors().unwrap()["vmid"], "type check ('integer') failed - got 'abc'");
    // PVE checks the format (pve-vmid) before the minimum.
    let err = get(Params::new().with("vmid", "5")).await;
    assert_eq!(err.param_errors().unwrap()["vmid"], "invalid format - value does not look like a valid VM ID");
    let err = s.client.get_json("/nodes/pve1/tasks", &Params::new().with("limit", "-1")).await.unwrap_err();
    assert_eq!(err.param_errors().unwrap()["limit"], "value must have a minimum value of 0");
    let err = get(Params::new().with("bogus", "1")).await;
    assert_eq!(
        err.param_errors().unwrap()["bogus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    let err = s.client.get_json("/cluster/resources", &Params::new().with("type", "bogus")).await.unwrap_err();
    assert_eq!(
        err.param_errors().unwrap()["type"],
        "value 'bogus' does not have a value in the enumeration 'vm, storage, node, sdn'"
    );
    let err = s.client.post_json("/nodes/pve1/qemu", &Params::new()).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.param_errors().unwrap()["vmid"], "property is missing and it is not optional");

    // Booleans must be 1/0 in form bodies: `true` fails the type check.
    let vmid = clone_vm(&s.client, "pve1", "bools").await;
    let err = s
        .client
        .post_json(
            &format!("/nodes/pve1/qemu/{vmid}/snapshot"),
            &Params::new().with("snapname", "x1").with("vmstate", "true"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.param_errors().unwrap()["vmstate"], "type check ('boolean') failed - got 'true'");
    // The typed client sends 1/0 and passes.
    let mut snap = SnapshotCreate::new("x1");
    snap.vmstate = Some(false);
    let up = s.client.node("pve1").qemu(vmid).create_snapshot(&snap).await.unwrap();
    wait_ok(&s.client, &up).await;
}

#[tokio::test]
async fn unknown_path_is_501_and_bad_token_is_401() {
    let s = start().await;
    let err = s.client.get_json("/nonexistent", &Params::new()).await.unwrap_err();
    assert_eq!(err.status(), Some(501));
    assert_eq!(err.pve_message(), Some("Method 'GET /nonexistent' not implemented"));
    assert_eq!(err.class(), ErrorClass::Permanent);

    let token = ApiToken::parse(s.sim.token()).unwrap();
    let wrong = ApiToken::new(token.token_id(), "00000000-0000-0000-0000-000000000000").unwrap();
    let fp = s.sim.fingerprint().unwrap().to_string();
    let bad = ProxmoxClient::new(ClientConfig::new(s.sim.base_url(), wrong, TlsMode::Fingerprint(fp))).unwrap();
    let err = bad.version().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.class(), ErrorClass::Permanent);
}

fn slow_snapshots() -> SimConfig {
    let mut config = SimConfig::for_tests();
    config.time_scale = 1.0;
    config.task_durations = HashMap::from([
        ("qmclone".to_string(), Duration::ZERO),
        ("qmstart".to_string(), Duration::ZERO),
        ("qmsnapshot".to_string(), Duration::from_secs(3)),
    ]);
    config
}

#[tokio::test]
async fn lock_conflicts_are_transient_and_wait_task_times_out() {
    let s = start_with(slow_snapshots()).await;
    let vmid = clone_vm(&s.client, "pve1", "locked").await;
    let vm = s.client.node("pve1").qemu(vmid);
    let up = vm.create_snapshot(&SnapshotCreate::new("slow")).await.unwrap();

    let st = s.client.task_status(&up).await.unwrap();
    assert!(st.is_running());
    assert_eq!(st.exitstatus, None);
    assert_eq!(vm.config().await.unwrap().lock.as_deref(), Some("snapshot"));
    assert_eq!(vm.status().await.unwrap().lock.as_deref(), Some("snapshot"));

    let err = vm.update_config(&QemuConfigUpdate::new(QemuOptions::new().cores(3))).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.pve_message(), Some("VM is locked (snapshot)"));
    assert!(err.is_lock_conflict());
    assert_eq!(err.class(), ErrorClass::Transient);

    let err = s.client.wait_task(&up, Duration::from_millis(300)).await.unwrap_err();
    match &err {
        PveError::TaskTimeout { upid, waited, .. } => {
            assert_eq!(upid, &up);
            assert!(*waited >= Duration::from_millis(300));
        }
        other => panic!("expected TaskTimeout, got {other}"),
    }
    assert!(err.is_transient());
    assert!(err.to_string().contains(up.as_str()));

    // It finishes, and the lock is released.
    let outcome = s.client.wait_task(&up, WAIT).await.unwrap();
    assert_eq!(outcome.exitstatus, "OK");
    assert_eq!(vm.config().await.unwrap().lock, None);
    vm.update_config(&QemuConfigUpdate::new(QemuOptions::new().cores(3))).await.unwrap();
}

#[tokio::test]
async fn stopping_a_running_task_fails_it() {
    let s = start_with(slow_snapshots()).await;
    let vmid = clone_vm(&s.client, "pve1", "stopped-task").await;
    let up = s.client.node("pve1").qemu(vmid).create_snapshot(&SnapshotCreate::new("interrupted")).await.unwrap();
    s.client.stop_task(&up).await.unwrap();
    let err = s.client.wait_task(&up, WAIT).await.unwrap_err();
    assert!(matches!(err, PveError::TaskFailed { .. }), "{err}");
}

#[tokio::test]
async fn node_down_gives_595_while_cluster_resources_answer() {
    let s = start().await;
    let faults = s.sim.faults();
    let template = debian_template(&s.client, "pve2").await;
    faults.set_node_down("pve2", true);

    let err = s.client.node("pve2").status().await.unwrap_err();
    assert_eq!(err.status(), Some(595));
    // The text comes from the reason phrase: the body is empty.
    assert!(err.pve_message().unwrap().contains("Connection refused"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    let err = s.client.node("pve2").qemu(template).config().await.unwrap_err();
    assert_eq!(err.status(), Some(595));

    let res = s.client.cluster_resources(Some(ResourceType::Node)).await.unwrap();
    let pve2 = res.iter().find(|r| r.id == "node/pve2").unwrap();
    assert_eq!(pve2.status.as_deref(), Some("offline"));
    let nodes = s.client.nodes().await.unwrap();
    assert_eq!(nodes.iter().find(|n| n.node == "pve2").unwrap().status, "offline");
    // Other nodes are unaffected.
    s.client.node("pve1").status().await.unwrap();

    faults.set_node_down("pve2", false);
    s.client.node("pve2").status().await.unwrap();
}

#[tokio::test]
async fn wait_task_retries_595_until_the_deadline() {
    let s = start_with(slow_snapshots()).await;
    let vmid = clone_vm(&s.client, "pve2", "behind-a-down-node").await;
    let up = s.client.node("pve2").qemu(vmid).create_snapshot(&SnapshotCreate::new("s1")).await.unwrap();
    s.sim.faults().set_node_down("pve2", true);
    let err = s.client.wait_task(&up, Duration::from_millis(500)).await.unwrap_err();
    match &err {
        PveError::TaskTimeout { last_error, .. } => {
            assert!(last_error.as_deref().unwrap_or("").contains("595"), "{err}")
        }
        other => panic!("expected TaskTimeout, got {other}"),
    }
    s.sim.faults().set_node_down("pve2", false);
    wait_ok(&s.client, &up).await;
}

#[tokio::test]
async fn injected_errors_and_latency() {
    let s = start().await;
    let faults = s.sim.faults();

    faults.add_error("GET /api2/json/version", 1.0, 500, "injected failure");
    let err = s.client.version().await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.pve_message(), Some("injected failure"));
    // A 500 with a handler message is permanent unless the text says otherwise.
    assert_eq!(err.class(), ErrorClass::Permanent);
    faults.clear();
    s.client.version().await.unwrap();

    faults.add_error(
        "GET /api2/json/nodes",
        1.0,
        500,
        "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
    );
    let err = s.client.nodes().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    faults.clear();

    faults.add_error("GET /api2/json/cluster/resources", 1.0, 503, "Service Unavailable");
    let err = s.client.cluster_resources(None).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.is_transient());
    faults.clear();

    faults.add_latency("GET /api2/json/version", Duration::from_secs(3));
    let token = ApiToken::parse(s.sim.token()).unwrap();
    let impatient = ProxmoxClient::new(
        ClientConfig::new(s.sim.base_url(), token, TlsMode::Fingerprint(s.sim.fingerprint().unwrap().to_string()))
            .timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let err = impatient.version().await.unwrap_err();
    assert!(matches!(err, PveError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
    faults.clear();
}

#[tokio::test]
async fn failed_task_carries_exit_status_and_log_tail() {
    let s = start().await;
    let vmid = clone_vm(&s.client, "pve1", "doomed").await;
    let vm = s.client.node("pve1").qemu(vmid);
    s.sim.faults().fail_next_task("qmstart", "start failed: QEMU exited with code 1");
    let up = vm.start().await.unwrap();
    let err = s.client.wait_task(&up, WAIT).await.unwrap_err();
    match &err {
        PveError::TaskFailed { upid, exitstatus, log_tail } => {
            assert_eq!(upid, &up);
            assert_eq!(exitstatus, "start failed: QEMU exited with code 1");
            assert!(log_tail.len() <= 20);
            assert_eq!(log_tail.last().map(String::as_str), Some("TASK ERROR: start failed: QEMU exited with code 1"));
        }
        other => panic!("expected TaskFailed, got {other}"),
    }
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains(up.as_str()));
    assert_eq!(vm.status().await.unwrap().status, "stopped");
    // Only the next task failed.
    wait_ok(&s.client, &vm.start().await.unwrap()).await;
}

#[tokio::test]
async fn tls_fingerprint_pinning() {
    let s = start().await;
    // The default test client pins the right fingerprint.
    s.client.version().await.unwrap();
    // Lowercase without colons is the same pin.
    let fp = s.sim.fingerprint().unwrap().replace(':', "").to_lowercase();
    client_for(&s.sim, TlsMode::Fingerprint(fp)).version().await.unwrap();

    let wrong = "AB:".repeat(31) + "AB";
    let err = client_for(&s.sim, TlsMode::Fingerprint(wrong)).version().await.unwrap_err();
    match &err {
        PveError::Tls { message, .. } => assert!(message.contains("does not match"), "{message}"),
        other => panic!("expected a TLS error, got {other}"),
    }
    assert_eq!(err.class(), ErrorClass::Permanent);

    // A public-CA client does not trust the self-signed certificate.
    let err = client_for(&s.sim, TlsMode::System).version().await.unwrap_err();
    assert!(matches!(err, PveError::Tls { .. }), "{err}");

    assert!(matches!(try_client_for(&s.sim, TlsMode::Fingerprint("12:34".into())), Err(PveError::Config(_))));
}

#[tokio::test]
async fn tls_ca_pem_and_insecure_modes() {
    let s = start().await;
    let pem = s.sim.certificate_pem().unwrap().to_string();
    client_for(&s.sim, TlsMode::CaPem(pem.clone())).version().await.unwrap();
    let dir = std::env::temp_dir().join(format!("nimbus-proxmox-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pve-root-ca.pem");
    std::fs::write(&file, &pem).unwrap();
    client_for(&s.sim, TlsMode::CaFile(file)).version().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();

    client_for(&s.sim, TlsMode::Insecure).version().await.unwrap();
}

#[tokio::test]
async fn plain_http_only_when_allowed_and_connection_refused() {
    let mut config = SimConfig::for_tests();
    config.tls = false;
    let sim = pve_sim::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(sim.base_url().starts_with("http://"));
    // Plain HTTP sends the token in clear: refused unless a lab allows it explicitly.
    match try_client_for(&sim, TlsMode::System) {
        Err(PveError::Config(m)) => assert!(m.contains("http://"), "{m}"),
        other => panic!("plain HTTP must be refused by default, got {other:?}"),
    }
    let token = ApiToken::parse(sim.token()).unwrap();
    let config = ClientConfig::new(sim.base_url(), token, TlsMode::System).allow_http(true);
    let client = ProxmoxClient::new(config).unwrap();
    client.version().await.unwrap();
    sim.shutdown().await;

    let err = client.version().await.unwrap_err();
    assert!(matches!(err, PveError::Transport { .. } | PveError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
}
