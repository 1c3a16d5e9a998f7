//! A started guest boots and then reports its addresses through the guest agent (LXC through
//! `interfaces`); consoles hand out tickets and the vncwebsocket speaks RFB (with the VNC
//! DES challenge) and termproxy's protocol.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::{Api, enc, ok_task};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn booting_config(boot: Duration) -> pve_sim::SimConfig {
    let mut cfg = pve_sim::SimConfig::for_tests();
    cfg.time_scale = 1.0;
    cfg.guest_boot_time = boot;
    for ty in ["qmclone", "qmcreate", "qmstart", "qmstop", "qmconfig", "vzcreate", "vzstart", "vncproxy"] {
        cfg.task_durations.insert(ty.into(), Duration::ZERO);
    }
    cfg
}

#[tokio::test]
async fn a_started_guest_reports_its_addresses_after_booting() {
    let api = Api::with(booting_config(Duration::from_millis(400))).await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "300")]).await).await;
    api.put(
        "/nodes/pve1/qemu/300/config",
        &[("net1", "virtio,bridge=vmbr0"), ("ipconfig1", "ip=192.0.2.50/24,gw=192.0.2.1")],
    )
    .await;
    let path = "/nodes/pve1/qemu/300/agent/network-get-interfaces";
    let r = api.get(path).await;
    assert_eq!((r.status, r.message()), (500, "VM 300 is not running\n"));
    ok_task(&api, &api.post("/nodes/pve1/qemu/300/status/start", &[]).await).await;
    let r = api.get(path).await;
    assert_eq!((r.status, r.message()), (500, "QEMU guest agent is not running\n"), "before boot");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = api.get(path).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ifaces = r.data()["result"].as_array().expect("QGA payload under result").clone();
    assert_eq!(ifaces[0]["name"], "lo");
    let cfg = api.get("/nodes/pve1/qemu/300/config").await;
    let mac0 = cfg.data()["net0"].as_str().unwrap()[7..24].to_ascii_lowercase();
    let eth0 = ifaces.iter().find(|i| i["name"] == "eth0").unwrap();
    assert_eq!(eth0["hardware-address"], mac0.as_str());
    let v4 = eth0["ip-addresses"].as_array().unwrap().iter().find(|a| a["ip-address-type"] == "ipv4").unwrap();
    let dhcp = v4["ip-address"].as_str().unwrap().to_string();
    assert!(dhcp.starts_with("10.10."), "{dhcp}");
    assert!(eth0["statistics"]["rx-bytes"].is_u64());
    let eth1 = ifaces.iter().find(|i| i["name"] == "eth1").unwrap();
    let a = &eth1["ip-addresses"][0];
    assert_eq!(
        (a["ip-address"].as_str(), a["prefix"].as_u64()),
        (Some("192.0.2.50"), Some(24)),
        "static ipconfig1 honoured"
    );
    assert!(
        eth1["ip-addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["ip-address"].as_str().unwrap().starts_with("fe80::"))
    );
    // The same seed gives the same lease in another simulator.
    let other = Api::with(booting_config(Duration::ZERO)).await;
    ok_task(&other, &other.post("/nodes/pve1/qemu/9000/clone", &[("newid", "300")]).await).await;
    ok_task(&other, &other.post("/nodes/pve1/qemu/300/status/start", &[]).await).await;
    let r = other.get(path).await;
    let v4 = r.data()["result"][1]["ip-addresses"][0]["ip-address"].clone();
    assert_eq!(v4, dhcp.as_str());
    // Agent commands through the generic endpoint, and ping.
    let r = api.post("/nodes/pve1/qemu/300/agent", &[("command", "get-host-name")]).await;
    assert_eq!(r.data()["result"]["host-name"], "Copy-of-VM-debian-12-cloudinit");
    let r = api.post("/nodes/pve1/qemu/300/agent/ping", &[]).await;
    assert_eq!(r.data()["result"], serde_json::json!({}));
    // After a stop the agent is gone again.
    ok_task(&api, &api.post("/nodes/pve1/qemu/300/status/stop", &[]).await).await;
    assert_eq!(api.get(path).await.message(), "VM 300 is not running\n");
}

#[tokio::test]
async fn no_agent_configured() {
    let api = Api::start().await;
    ok_task(&api, &api.post("/nodes/pve1/qemu", &[("vmid", "310"), ("net0", "virtio,bridge=vmbr0")]).await).await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/310/status/start", &[]).await).await;
    let r = api.get("/nodes/pve1/qemu/310/agent/network-get-interfaces").await;
    assert_eq!(r.message(), "No QEMU guest agent configured\n");
    // `agent` is not hot-pluggable: it waits in the pending section until the next start.
    api.put("/nodes/pve1/qemu/310/config", &[("agent", "0")]).await;
    let r = api.get("/nodes/pve1/qemu/310/agent/network-get-interfaces").await;
    assert_eq!(r.message(), "No QEMU guest agent configured\n");
    ok_task(&api, &api.post("/nodes/pve1/qemu/310/status/stop", &[]).await).await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/310/status/start", &[]).await).await;
    let r = api.get("/nodes/pve1/qemu/310/agent/network-get-interfaces").await;
    assert_eq!(r.message(), "QEMU guest agent is not running\n");
}

#[tokio::test]
async fn container_interfaces() {
    let api = Api::start().await;
    let r = api
        .post(
            "/nodes/pve1/lxc",
            &[
                ("vmid", "320"),
                ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
                ("rootfs", "local-lvm:2"),
                ("net0", "name=eth0,bridge=vmbr0,ip=192.0.2.7/24,gw=192.0.2.1"),
            ],
        )
        .await;
    ok_task(&api, &r).await;
    let r = api.get("/nodes/pve1/lxc/320/interfaces").await;
    assert_eq!((r.status, r.data().clone()), (200, Value::Null), "a stopped container has none");
    ok_task(&api, &api.post("/nodes/pve1/lxc/320/status/start", &[]).await).await;
    let r = api.get("/nodes/pve1/lxc/320/interfaces").await;
    let eth0 = r.data().as_array().unwrap().iter().find(|i| i["name"] == "eth0").unwrap().clone();
    assert_eq!(eth0["inet"], "192.0.2.7/24");
    assert_eq!(eth0["hwaddr"], eth0["hardware-address"]);
    assert_eq!(eth0["ip-addresses"][0]["ip-address-type"], "inet");
}

/// A websocket to the simulator (plain HTTP) with the API token.
async fn ws_connect(
    api: &Api,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{}/api2/json{path}", api.sim.addr());
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Authorization", api.auth.parse().unwrap());
    req.headers_mut().insert("Sec-WebSocket-Protocol", "binary".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "binary");
    ws
}

struct Rx<S> {
    ws: S,
    buf: VecDeque<u8>,
}

impl<S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin> Rx<S> {
    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await.expect("data in time");
            match msg.expect("open").expect("frame") {
                Message::Binary(b) => self.buf.extend(b.iter()),
                Message::Text(t) => self.buf.extend(t.as_bytes()),
                other => panic!("unexpected {other:?}"),
            }
        }
        self.buf.drain(..n).collect()
    }
}

fn plain_http() -> pve_sim::SimConfig {
    pve_sim::SimConfig { tls: false, ..pve_sim::SimConfig::for_tests() }
}

#[tokio::test]
async fn vncwebsocket_speaks_rfb_with_vnc_authentication() {
    let api = Api::with(plain_http()).await;
    ok_task(&api, &api.post("/nodes/pve1/qemu", &[("vmid", "330"), ("name", "desk1")]).await).await;
    let r = api.post("/nodes/pve1/qemu/330/vncproxy", &[("websocket", "1")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = r.data().clone();
    let port = d["port"].as_u64().unwrap();
    assert!((5900..=5999).contains(&port));
    let password = d["password"].as_str().unwrap().to_string();
    assert_eq!(password.len(), 8);
    let ticket = d["ticket"].as_str().unwrap().to_string();
    assert!(ticket.starts_with(&format!("{password}:PVEVNC:")), "{ticket}");
    assert_eq!(d["user"], "root@pam!nimbus");
    assert!(d["upid"].as_str().unwrap().contains(":vncproxy:330:"));
    assert!(d.get("cert").is_some());
    // A second console gets the next port.
    let r2 = api.post("/nodes/pve1/qemu/330/vncproxy", &[("websocket", "1")]).await;
    assert_eq!(r2.data()["port"].as_u64(), Some(port + 1));
    let q = format!("port={port}&vncticket={}", enc(&ticket));
    // Without an upgrade the endpoint answers the port (as a string).
    let plain = api.get(&format!("/nodes/pve1/qemu/330/vncwebsocket?{q}")).await;
    assert_eq!(plain.data()["port"], port.to_string());
    let bad = api.get(&format!("/nodes/pve1/qemu/330/vncwebsocket?port={}&vncticket={}", port + 2, enc(&ticket))).await;
    assert_eq!((bad.status, bad.message()), (401, "permission denied - invalid PVEVNC ticket\n"));

    let ws = ws_connect(&api, &format!("/nodes/pve1/qemu/330/vncwebsocket?{q}")).await;
    let (mut tx, rx) = ws.split();
    let mut rx = Rx { ws: rx, buf: VecDeque::new() };
    assert_eq!(rx.read(12).await, b"RFB 003.008\n");
    tx.send(Message::Binary(b"RFB 003.008\n".to_vec().into())).await.unwrap();
    assert_eq!(rx.read(2).await, vec![1, 2], "one security type: VNC authentication");
    tx.send(Message::Binary(vec![2].into())).await.unwrap();
    let challenge: [u8; 16] = rx.read(16).await.try_into().unwrap();
    let answer = pve_sim::guests::rfb::vnc_auth_response(&password, &challenge);
    tx.send(Message::Binary(answer.to_vec().into())).await.unwrap();
    assert_eq!(rx.read(4).await, vec![0, 0, 0, 0], "SecurityResult OK");
    tx.send(Message::Binary(vec![1].into())).await.unwrap();
    let init = rx.read(24).await;
    assert_eq!(u16::from_be_bytes([init[0], init[1]]), 640);
    assert_eq!(u16::from_be_bytes([init[2], init[3]]), 480);
    assert_eq!(init[4], 32, "32 bits per pixel");
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    assert_eq!(rx.read(name_len).await, b"desk1");
    // A full framebuffer update request is answered with one raw rectangle.
    tx.send(Message::Binary(vec![3, 0, 0, 0, 0, 0, 2, 128, 1, 224].into())).await.unwrap();
    let head = rx.read(16).await;
    assert_eq!(&head[..4], &[0, 0, 0, 1]);
    assert_eq!(&head[8..12], &[2, 128, 1, 224]);
    let pixels = rx.read(640 * 480 * 4).await;
    assert!(pixels.chunks(4).all(|p| p == &pixels[..4]));

    // The port is used now: a wrong password on a new session fails authentication.
    let r = api.post("/nodes/pve1/qemu/330/vncproxy", &[("websocket", "1")]).await;
    let (port, ticket) = (r.data()["port"].as_u64().unwrap(), r.data()["ticket"].as_str().unwrap().to_string());
    let ws =
        ws_connect(&api, &format!("/nodes/pve1/qemu/330/vncwebsocket?port={port}&vncticket={}", enc(&ticket))).await;
    let (mut tx, rx) = ws.split();
    let mut rx = Rx { ws: rx, buf: VecDeque::new() };
    rx.read(12).await;
    tx.send(Message::Binary(b"RFB 003.008\n".to_vec().into())).await.unwrap();
    rx.read(2).await;
    tx.send(Message::Binary(vec![2].into())).await.unwrap();
    let challenge: [u8; 16] = rx.read(16).await.try_into().unwrap();
    let wrong = pve_sim::guests::rfb::vnc_auth_response("nottheone", &challenge);
    tx.send(Message::Binary(wrong.to_vec().into())).await.unwrap();
    assert_eq!(rx.read(4).await, vec![0, 0, 0, 1], "SecurityResult failed");
    let len = rx.read(4).await;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    assert_eq!(rx.read(len).await, b"Authentication failed");
}

#[tokio::test]
async fn termproxy_authenticates_with_the_ticket() {
    let api = Api::with(plain_http()).await;
    let r = api
        .post(
            "/nodes/pve1/lxc",
            &[
                ("vmid", "340"),
                ("hostname", "ct1"),
                ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
                ("rootfs", "local-lvm:1"),
            ],
        )
        .await;
    ok_task(&api, &r).await;
    let r = api.post("/nodes/pve1/lxc/340/termproxy", &[]).await;
    let d = r.data().clone();
    assert!(d.get("password").is_none() && d.get("cert").is_none(), "{d}");
    let (port, ticket, user) =
        (d["port"].as_u64().unwrap(), d["ticket"].as_str().unwrap(), d["user"].as_str().unwrap());
    assert!(ticket.starts_with("PVEVNC:"));
    let ws = ws_connect(&api, &format!("/nodes/pve1/lxc/340/vncwebsocket?port={port}&vncticket={}", enc(ticket))).await;
    let (mut tx, rx) = ws.split();
    let mut rx = Rx { ws: rx, buf: VecDeque::new() };
    tx.send(Message::Text(format!("{user}:{ticket}\n").into())).await.unwrap();
    assert_eq!(rx.read(2).await, b"OK");
    let banner = String::from_utf8(rx.read(40).await).unwrap();
    assert!(banner.contains("ct1"), "{banner}");
    rx.buf.clear();
    tx.send(Message::Binary(b"0:4:root".to_vec().into())).await.unwrap();
    let echo = rx.read(4).await;
    assert_eq!(echo, b"root");
}
