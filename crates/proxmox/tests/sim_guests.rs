//! The client against `pve-sim`: qemu and LXC guest lifecycles, snapshots, resize,
//! firewall, consoles, guest agent, backups and restores.

mod common;

use std::time::Duration;

use common::{
    SSH_KEY, WAIT, clone_vm, debian_ct_template, debian_template, eventually, expect_failure, expect_sync_error,
    expect_task_error, start, wait_ok,
};
use futures::StreamExt;
use nimbus_proxmox::propstring::disk_size_bytes;
use nimbus_proxmox::{
    ContentQuery, DeleteOptions, ErrorClass, FirewallRuleCreate, IpConfig, LxcClone, LxcConfigUpdate, LxcCreate,
    LxcNet, LxcOptions, LxcVolume, QemuClone, QemuConfigUpdate, QemuOptions, ShutdownOptions, SnapshotCreate,
    Timeframe, VncProxyOptions, VzdumpParams,
};
use tokio_tungstenite::tungstenite::Message;

const GIB: u64 = 1 << 30;

#[tokio::test]
async fn qemu_clone_configure_and_power_cycle() {
    let s = start().await;
    let node = s.client.node("pve1");
    let template = debian_template(&s.client, "pve1").await;
    let tcfg = node.qemu(template).config().await.unwrap();
    assert_eq!(tcfg.template, Some(true));

    let vmid = clone_vm(&s.client, "pve1", "web1").await;
    let vm = node.qemu(vmid);
    let cfg = vm.config().await.unwrap();
    assert_eq!(cfg.name.as_deref(), Some("web1"));
    assert_ne!(cfg.template, Some(true), "a clone is not a template");
    assert!(!cfg.digest.is_empty());
    let net = &cfg.nets()[&0];
    assert!(net.macaddr.as_deref().unwrap().starts_with("BC:24:11:"));
    assert_ne!(net.macaddr, tcfg.nets()[&0].macaddr, "clone gets its own MAC");

    // Synchronous PUT: cloud-init settings, including the double-encoded sshkeys.
    vm.update_config(&QemuConfigUpdate::new(
        QemuOptions::new()
            .ciuser("nimbus")
            .ssh_keys(&[SSH_KEY])
            .ipconfig(0, IpConfig::static_v4("10.0.10.123/24", Some("10.0.10.1")))
            .cores(4)
            .memory(4096),
    ))
    .await
    .unwrap();
    let cfg = vm.config().await.unwrap();
    assert_eq!(cfg.ciuser.as_deref(), Some("nimbus"));
    assert_eq!(cfg.ssh_keys(), vec![SSH_KEY.to_string()]);
    assert!(cfg.sshkeys.as_deref().unwrap().contains("%20"), "GET config returns sshkeys still encoded");
    assert_eq!(cfg.ipconfigs()[&0].ip.as_deref(), Some("10.0.10.123/24"));
    assert_eq!(cfg.cores, Some(4));
    assert_eq!(cfg.memory_mib(), Some(4096));

    // Asynchronous POST: a `qmconfig` task.
    let upid = vm
        .update_config_async(
            &QemuConfigUpdate::new(QemuOptions::new().description("async note")).digest(cfg.digest.clone()),
        )
        .await
        .unwrap();
    assert_eq!(upid.task_type(), "qmconfig");
    wait_ok(&s.client, &upid).await;
    let cfg2 = vm.config().await.unwrap();
    assert_eq!(cfg2.description.as_deref(), Some("async note"));
    assert_ne!(cfg2.digest, cfg.digest);
    // A stale digest is refused.
    let stale = vm
        .update_config(&QemuConfigUpdate::new(QemuOptions::new().cores(2)).digest(cfg.digest.clone()))
        .await
        .unwrap_err();
    assert_eq!(stale.class(), ErrorClass::Permanent);

    // Deleting a key.
    vm.update_config(&QemuConfigUpdate::default().delete_keys(&["description"])).await.unwrap();
    assert_eq!(vm.config().await.unwrap().description, None);

    // Power cycle.
    let st = vm.status().await.unwrap();
    assert_eq!(st.status, "stopped");
    assert_eq!(st.vmid, vmid);
    wait_ok(&s.client, &vm.start().await.unwrap()).await;
    let st = vm.status().await.unwrap();
    assert!(st.is_running());
    assert_eq!(st.qmpstatus.as_deref(), Some("running"));
    assert!(st.pid.is_some());
    assert_eq!(st.maxmem, Some(4096 * 1024 * 1024));

    // Starting a running VM fails inside the task.
    let err = expect_task_error(&s.client, vm.start()).await;
    assert!(err.pve_message().unwrap().contains("already running"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);

    wait_ok(&s.client, &vm.suspend().await.unwrap()).await;
    let st = vm.status().await.unwrap();
    assert_eq!(st.qmpstatus.as_deref(), Some("paused"));
    assert!(st.is_paused());
    wait_ok(&s.client, &vm.resume().await.unwrap()).await;
    assert_eq!(vm.status().await.unwrap().qmpstatus.as_deref(), Some("running"));
    wait_ok(&s.client, &vm.reboot().await.unwrap()).await;
    assert!(vm.status().await.unwrap().is_running());

    let listed = node.qemu_list().await.unwrap();
    let item = listed.iter().find(|g| g.vmid == vmid).unwrap();
    assert_eq!(item.status, "running");
    assert_eq!(item.name.as_deref(), Some("web1"));

    let up = vm.shutdown(&ShutdownOptions { timeout: Some(30), force_stop: Some(true) }).await.unwrap();
    assert_eq!(up.task_type(), "qmshutdown");
    wait_ok(&s.client, &up).await;
    assert_eq!(vm.status().await.unwrap().status, "stopped");

    // Reboot, suspend and resume of a stopped VM: synchronous 500 `VM <id> not running`.
    for err in [vm.reboot().await.unwrap_err(), vm.suspend().await.unwrap_err(), vm.resume().await.unwrap_err()] {
        assert_eq!(err.status(), Some(500));
        assert_eq!(err.pve_message(), Some(format!("VM {vmid} not running").as_str()));
        assert_eq!(err.class(), ErrorClass::Permanent);
    }
    // Shutdown has no up-front check (qemu-server `vm_shutdown`): its worker finds nothing to do.
    let up = vm.shutdown(&ShutdownOptions::default()).await.unwrap();
    wait_ok(&s.client, &up).await;
    // Stop has no up-front check: it returns a task.
    let stop = vm.stop().await.unwrap();
    assert_eq!(stop.task_type(), "qmstop");
    let _ = s.client.wait_task(&stop, WAIT).await;

    // Delete with purge; then the guest is gone.
    let del = vm.delete(&DeleteOptions::purge_all()).await.unwrap();
    assert_eq!(del.task_type(), "qmdestroy");
    wait_ok(&s.client, &del).await;
    let gone = vm.status().await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert_eq!(gone.class(), ErrorClass::Permanent);
    assert!(node.qemu_list().await.unwrap().iter().all(|g| g.vmid != vmid));
}

#[tokio::test]
async fn qemu_delete_refused_while_running() {
    let s = start().await;
    let vmid = clone_vm(&s.client, "pve1", "busy").await;
    let vm = s.client.node("pve1").qemu(vmid);
    wait_ok(&s.client, &vm.start().await.unwrap()).await;
    let err = expect_sync_error(vm.delete(&DeleteOptions::purge_all())).await;
    assert_eq!(err.status(), Some(500));
    assert!(err.pve_message().unwrap().contains("is running - destroy failed"), "{err}");
    assert!(vm.status().await.unwrap().is_running());
}

#[tokio::test]
async fn qemu_clone_rules() {
    let s = start().await;
    let node = s.client.node("pve1");
    let template = debian_template(&s.client, "pve1").await;
    let newid = s.client.next_id(None).await.unwrap();
    // storage is only allowed for full clones.
    let err = node.qemu(template).clone_to(&QemuClone::new(newid).storage("local-lvm")).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.pve_message().unwrap().contains("parameter 'storage' not allowed for linked clones"), "{err}");
    // A full clone may name a storage.
    let full = node
        .qemu(template)
        .clone_to(&QemuClone::new(newid).full(true).storage("local-lvm").name("full1"))
        .await
        .unwrap();
    wait_ok(&s.client, &full).await;
    assert_eq!(node.qemu(newid).config().await.unwrap().name.as_deref(), Some("full1"));
    // Cloning onto an existing id.
    let err = expect_sync_error(node.qemu(template).clone_to(&QemuClone::new(newid))).await;
    assert!(err.is_already_exists(), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn qemu_snapshots_resize_rrd_and_firewall() {
    let s = start().await;
    let vmid = clone_vm(&s.client, "pve1", "snappy").await;
    let vm = s.client.node("pve1").qemu(vmid);

    let list = vm.snapshots().await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].is_current());
    assert_eq!(list[0].description.as_deref(), Some("You are here!"));

    let up = vm.create_snapshot(&SnapshotCreate::new("s1").description("before upgrade")).await.unwrap();
    assert_eq!(up.task_type(), "qmsnapshot");
    wait_ok(&s.client, &up).await;
    let list = vm.snapshots().await.unwrap();
    let s1 = list.iter().find(|x| x.name == "s1").expect("s1 listed");
    assert_eq!(s1.description.as_deref(), Some("before upgrade"));
    assert!(s1.snaptime.is_some());
    assert!(list.last().unwrap().is_current());
    assert_eq!(list.last().unwrap().parent.as_deref(), Some("s1"));

    let err = expect_task_error(&s.client, vm.create_snapshot(&SnapshotCreate::new("s1"))).await;
    assert!(err.pve_message().unwrap().contains("already used"), "{err}");
    let err = vm.create_snapshot(&SnapshotCreate::new("current")).await.unwrap_err();
    assert!(err.pve_message().unwrap().contains("reserved name"), "{err}");

    // Change something, roll back, and see it restored.
    vm.update_config(&QemuConfigUpdate::new(QemuOptions::new().cores(8))).await.unwrap();
    let up = vm.rollback("s1", false).await.unwrap();
    assert_eq!(up.task_type(), "qmrollback");
    wait_ok(&s.client, &up).await;
    assert_eq!(vm.config().await.unwrap().cores, Some(2));
    let err = expect_failure(&s.client, vm.rollback("nope", false)).await;
    assert!(err.pve_message().unwrap().contains("does not exist"), "{err}");
    assert!(err.is_not_found());

    let up = vm.delete_snapshot("s1", false).await.unwrap();
    assert_eq!(up.task_type(), "qmdelsnapshot");
    wait_ok(&s.client, &up).await;
    assert!(vm.snapshots().await.unwrap().iter().all(|x| x.name != "s1"));

    // Resize: grow by 1 GiB, then try to shrink.
    let before = disk_size_bytes(&vm.config().await.unwrap().disks()["scsi0"]).unwrap();
    let up = vm.resize("scsi0", "+1G").await.unwrap();
    assert_eq!(up.task_type(), "resize");
    wait_ok(&s.client, &up).await;
    let after = disk_size_bytes(&vm.config().await.unwrap().disks()["scsi0"]).unwrap();
    assert_eq!(after, before + GIB);
    let err = expect_failure(&s.client, vm.resize("scsi0", "1G")).await;
    assert!(err.pve_message().unwrap().contains("shrinking disks is not supported"), "{err}");
    let err = vm.resize("scsi0", "lots").await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.param_errors().unwrap().contains_key("size"));

    // rrddata: 70 points of 60 s, plausible values.
    let pts = vm.rrddata(Timeframe::Hour, None).await.unwrap();
    assert_eq!(pts.len(), 70);
    assert!(pts.windows(2).all(|w| w[1].time - w[0].time == 60));
    assert!(pts.iter().any(|p| p.get("maxmem").is_some()));
    assert!(pts.iter().filter_map(|p| p.get("cpu")).all(|c| (0.0..=1.0).contains(&c)));

    // Firewall rules.
    assert!(vm.firewall_rules().await.unwrap().is_empty());
    let mut ssh = FirewallRuleCreate::new("in", "ACCEPT");
    ssh.proto = Some("tcp".into());
    ssh.dport = Some("22".into());
    ssh.comment = Some("ssh".into());
    vm.create_firewall_rule(&ssh).await.unwrap();
    let mut web = FirewallRuleCreate::new("in", "ACCEPT");
    web.proto = Some("tcp".into());
    web.dport = Some("443".into());
    vm.create_firewall_rule(&web).await.unwrap();
    let rules = vm.firewall_rules().await.unwrap();
    assert_eq!(rules.len(), 2);
    // New rules go to the top (pos 0) unless a position is given.
    assert_eq!(rules[0].pos, 0);
    assert_eq!(rules[0].dport.as_deref(), Some("443"));
    assert_eq!(rules[1].dport.as_deref(), Some("22"));
    let one = vm.firewall_rule(1).await.unwrap();
    assert_eq!(one.comment.as_deref(), Some("ssh"));
    assert_eq!(one.rule_type, "in");
    vm.delete_firewall_rule(0, None).await.unwrap();
    let rules = vm.firewall_rules().await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].dport.as_deref(), Some("22"));
    let bad = vm.create_firewall_rule(&FirewallRuleCreate::new("sideways", "ACCEPT")).await.unwrap_err();
    assert_eq!(bad.status(), Some(400));
    assert!(bad.param_errors().unwrap().contains_key("type"));
}

#[tokio::test]
async fn qemu_agent_and_vnc_console() {
    let s = start().await;
    let vmid = clone_vm(&s.client, "pve1", "console").await;
    let vm = s.client.node("pve1").qemu(vmid);

    // Agent of a stopped VM: a handler error (`VM <id> is not running` in PVE).
    let err = vm.agent_network_interfaces().await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.pve_message().unwrap().contains("not running"), "{err}");

    wait_ok(&s.client, &vm.start().await.unwrap()).await;
    let ifaces = eventually(Duration::from_secs(10), || async {
        match vm.agent_network_interfaces().await {
            Ok(list) if list.iter().any(|i| i.name != "lo" && !i.ip_addresses.is_empty()) => Some(list),
            Ok(_) => None,
            Err(e) if e.is_transient() => None,
            Err(e) => panic!("agent: {e}"),
        }
    })
    .await
    .expect("the guest agent reports addresses after boot");
    let eth = ifaces.iter().find(|i| i.name != "lo").unwrap();
    let mac = vm.config().await.unwrap().nets()[&0].macaddr.clone().unwrap();
    assert_eq!(eth.hardware_address.as_deref().map(str::to_ascii_uppercase), Some(mac));
    assert!(eth.ip_addresses.iter().any(|a| a.ip_address_type.as_deref() == Some("ipv4")));

    let ticket = vm.vncproxy(&VncProxyOptions::websocket()).await.unwrap();
    assert!((5900..=5999).contains(&ticket.port));
    assert!(ticket.ticket.contains("PVEVNC:"), "{}", ticket.ticket);
    assert_eq!(ticket.user, s.client.token_id());
    let url = vm.vnc_websocket_url(ticket.port, &ticket.ticket).unwrap();
    assert_eq!(url.scheme(), "wss");
    assert!(url.query().unwrap().contains("vncticket=PVEVNC%3A") || url.query().unwrap().contains("%3APVEVNC%3A"));

    let mut ws = vm.connect_console(ticket.port, &ticket.ticket).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("server speaks first in RFB")
        .expect("a message")
        .expect("no websocket error");
    let bytes = match first {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected binary RFB, got {other:?}"),
    };
    assert!(bytes.starts_with(b"RFB 003."), "{:?}", String::from_utf8_lossy(&bytes));
    ws.close(None).await.ok();

    // A forged ticket is refused before the upgrade.
    let err = vm.connect_console(ticket.port, "PVEVNC:00000000::forged").await.unwrap_err();
    assert!(matches!(err.status(), Some(401) | Some(403) | Some(500)), "{err}");

    // generate-password: the ticket carries the 8-character VNC password as its prefix.
    let with_pw = vm.vncproxy(&VncProxyOptions { websocket: Some(true), generate_password: Some(true) }).await.unwrap();
    let pw = with_pw.password.clone().expect("a generated password");
    assert_eq!(pw.len(), 8);
    assert!(with_pw.ticket.starts_with(&format!("{pw}:PVEVNC:")), "{}", with_pw.ticket);

    let term = vm.termproxy().await.unwrap();
    assert!((5900..=5999).contains(&term.port));
    assert!(!term.ticket.is_empty());
}

#[tokio::test]
async fn qemu_backup_and_restore() {
    let s = start().await;
    let node = s.client.node("pve1");
    let vmid = clone_vm(&s.client, "pve1", "backed-up").await;
    let up = node.vzdump(&VzdumpParams::guest(vmid, "local")).await.unwrap();
    assert_eq!(up.task_type(), "vzdump");
    assert_eq!(up.id(), vmid.to_string());
    wait_ok(&s.client, &up).await;

    let backups = node.storage("local").content(&ContentQuery::backups_of(vmid)).await.unwrap();
    assert_eq!(backups.len(), 1);
    let b = &backups[0];
    let prefix = format!("local:backup/vzdump-qemu-{vmid}-");
    assert!(b.volid.starts_with(&prefix), "{}", b.volid);
    assert!(b.volid.ends_with(".vma.zst"), "{}", b.volid);
    assert_eq!(b.vmid, Some(vmid));
    assert!(b.size.unwrap() > 0);
    assert!(b.ctime.is_some());
    // The archive name carries the creation time: vzdump-qemu-ID-YYYY_MM_DD-HH_MM_SS.
    let stamp = &b.volid[prefix.len()..b.volid.len() - ".vma.zst".len()];
    assert_eq!(stamp.len(), 19, "{stamp}");

    let newid = s.client.next_id(None).await.unwrap();
    let up = node.restore_qemu(newid, &b.volid, Some("local-lvm")).await.unwrap();
    assert_eq!(up.task_type(), "qmrestore");
    wait_ok(&s.client, &up).await;
    let restored = node.qemu(newid).config().await.unwrap();
    assert_eq!(restored.name.as_deref(), Some("backed-up"));

    // Restoring over an existing guest without force fails.
    let err = expect_sync_error(node.restore_qemu(newid, &b.volid, None)).await;
    assert!(err.is_already_exists(), "{err}");

    let del = node.storage("local").delete_volume(&b.volid).await.unwrap();
    wait_ok(&s.client, &del).await;
    assert!(node.storage("local").content(&ContentQuery::backups_of(vmid)).await.unwrap().is_empty());
}

#[tokio::test]
async fn lxc_full_lifecycle() {
    let s = start().await;
    let node = s.client.node("pve1");
    let ostemplate = debian_ct_template(&s.client, "pve1").await;
    let ctid = s.client.next_id(None).await.unwrap();
    let create = LxcCreate::new(
        ctid,
        &ostemplate,
        LxcOptions::new()
            .hostname("ct1")
            .memory(512)
            .swap(512)
            .cores(1)
            .rootfs_volume(LxcVolume::new("local-lvm", 4))
            .net(0, LxcNet::new("eth0", "vmbr0").dhcp())
            .unprivileged(true),
    )
    .ssh_keys(&[SSH_KEY])
    .password("Sup3r-secret");
    let up = node.create_lxc(&create).await.unwrap();
    assert_eq!(up.task_type(), "vzcreate");
    wait_ok(&s.client, &up).await;

    // A second create with the same id loses the race.
    let err = expect_sync_error(node.create_lxc(&create)).await;
    assert!(err.is_already_exists(), "{err}");

    let ct = node.lxc(ctid);
    let cfg = ct.config().await.unwrap();
    assert_eq!(cfg.hostname.as_deref(), Some("ct1"));
    assert_eq!(cfg.memory, Some(512));
    assert_eq!(cfg.unprivileged, Some(true));
    let net = &cfg.nets()[&0];
    assert_eq!(net.name, "eth0");
    assert_eq!(net.ip.as_deref(), Some("dhcp"));
    assert!(net.hwaddr.as_deref().unwrap().starts_with("BC:24:11:"));
    let root_before = disk_size_bytes(cfg.rootfs.as_deref().unwrap()).unwrap();
    assert_eq!(root_before, 4 * GIB);

    ct.update_config(&LxcConfigUpdate::new(LxcOptions::new().memory(1024).description("ct note"))).await.unwrap();
    let cfg = ct.config().await.unwrap();
    assert_eq!(cfg.memory, Some(1024));
    assert_eq!(cfg.description.as_deref(), Some("ct note"));

    let listed = node.lxc_list().await.unwrap();
    assert!(listed.iter().any(|g| g.vmid == ctid && g.status == "stopped"));

    wait_ok(&s.client, &ct.start().await.unwrap()).await;
    let st = ct.status().await.unwrap();
    assert!(st.is_running());
    assert_eq!(st.maxmem, Some(1024 * 1024 * 1024));
    let ifaces = eventually(Duration::from_secs(10), || async {
        let list = ct.interfaces().await.ok()?;
        list.iter().find(|i| i.name == "eth0" && i.inet.is_some()).cloned()
    })
    .await
    .expect("eth0 gets an address");
    assert!(ifaces.inet.unwrap().contains('/'));

    wait_ok(&s.client, &ct.suspend().await.unwrap()).await;
    wait_ok(&s.client, &ct.resume().await.unwrap()).await;
    wait_ok(&s.client, &ct.reboot().await.unwrap()).await;
    assert!(ct.status().await.unwrap().is_running());

    // Snapshots (no vmstate for containers).
    let up = ct.create_snapshot(&SnapshotCreate::new("c1")).await.unwrap();
    assert_eq!(up.task_type(), "vzsnapshot");
    wait_ok(&s.client, &up).await;
    let snaps = ct.snapshots().await.unwrap();
    assert!(snaps.iter().any(|x| x.name == "c1"));
    assert!(snaps.last().unwrap().is_current());
    ct.update_config(&LxcConfigUpdate::new(LxcOptions::new().memory(2048))).await.unwrap();
    let up = ct.rollback("c1", false).await.unwrap();
    assert_eq!(up.task_type(), "vzrollback");
    wait_ok(&s.client, &up).await;
    assert_eq!(ct.config().await.unwrap().memory, Some(1024));
    wait_ok(&s.client, &ct.start().await.unwrap()).await;
    wait_ok(&s.client, &ct.delete_snapshot("c1", false).await.unwrap()).await;

    // Resize the root filesystem.
    wait_ok(&s.client, &ct.resize("rootfs", "+1G").await.unwrap()).await;
    let cfg = ct.config().await.unwrap();
    assert_eq!(disk_size_bytes(cfg.rootfs.as_deref().unwrap()), Some(root_before + GIB));

    // rrddata for a day: 70 points of 30 min.
    let pts = ct.rrddata(Timeframe::Day, None).await.unwrap();
    assert_eq!(pts.len(), 70);
    assert!(pts.windows(2).all(|w| w[1].time - w[0].time == 1800));

    // Firewall.
    let mut rule = FirewallRuleCreate::new("in", "DROP");
    rule.source = Some("192.0.2.0/24".into());
    ct.create_firewall_rule(&rule).await.unwrap();
    let rules = ct.firewall_rules().await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].action, "DROP");
    ct.delete_firewall_rule(0, None).await.unwrap();
    assert!(ct.firewall_rules().await.unwrap().is_empty());

    // Consoles: termproxy and vncproxy tickets.
    let term = ct.termproxy().await.unwrap();
    assert!((5900..=5999).contains(&term.port));
    let vnc = ct.vncproxy(&VncProxyOptions::websocket()).await.unwrap();
    assert!(vnc.ticket.contains("PVEVNC:"));
    assert_eq!(vnc.password, None);
    let mut ws = ct.connect_console(vnc.port, &vnc.ticket).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&first, Message::Binary(b) if b.starts_with(b"RFB 003.")), "{first:?}");
    ws.close(None).await.ok();

    let up = ct.shutdown(&ShutdownOptions::default()).await.unwrap();
    assert_eq!(up.task_type(), "vzshutdown");
    wait_ok(&s.client, &up).await;
    assert_eq!(ct.status().await.unwrap().status, "stopped");

    // Clone the stopped container (full copy).
    let cloneid = s.client.next_id(None).await.unwrap();
    let up = ct.clone_to(&LxcClone::new(cloneid).hostname("ct1-copy").full(true)).await.unwrap();
    assert_eq!(up.task_type(), "vzclone");
    wait_ok(&s.client, &up).await;
    assert_eq!(node.lxc(cloneid).config().await.unwrap().hostname.as_deref(), Some("ct1-copy"));

    let up = ct.delete(&DeleteOptions::purge_all()).await.unwrap();
    assert_eq!(up.task_type(), "vzdestroy");
    wait_ok(&s.client, &up).await;
    let gone = ct.config().await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
}

#[tokio::test]
async fn lxc_backup_and_restore() {
    let s = start().await;
    let node = s.client.node("pve1");
    let ostemplate = debian_ct_template(&s.client, "pve1").await;
    let ctid = s.client.next_id(None).await.unwrap();
    let up = node
        .create_lxc(&LxcCreate::new(
            ctid,
            &ostemplate,
            LxcOptions::new().hostname("to-backup").rootfs_volume(LxcVolume::new("local-lvm", 2)),
        ))
        .await
        .unwrap();
    wait_ok(&s.client, &up).await;

    let up = node.vzdump(&VzdumpParams::guest(ctid, "local")).await.unwrap();
    wait_ok(&s.client, &up).await;
    let backups = node.storage("local").content(&ContentQuery::backups_of(ctid)).await.unwrap();
    assert_eq!(backups.len(), 1);
    let volid = backups[0].volid.clone();
    assert!(volid.starts_with(&format!("local:backup/vzdump-lxc-{ctid}-")), "{volid}");
    assert!(volid.ends_with(".tar.zst"), "{volid}");

    let newid = s.client.next_id(None).await.unwrap();
    let up = node.restore_lxc(newid, &volid, Some("local-lvm")).await.unwrap();
    assert_eq!(up.task_type(), "vzrestore");
    wait_ok(&s.client, &up).await;
    let cfg = node.lxc(newid).config().await.unwrap();
    assert_eq!(cfg.hostname.as_deref(), Some("to-backup"));
}

#[tokio::test]
async fn qemu_template_conversion() {
    let s = start().await;
    let vmid = clone_vm(&s.client, "pve1", "to-template").await;
    let vm = s.client.node("pve1").qemu(vmid);
    let up = vm.convert_to_template().await.unwrap();
    assert_eq!(up.task_type(), "qmtemplate");
    wait_ok(&s.client, &up).await;
    assert_eq!(vm.config().await.unwrap().template, Some(true));
    assert_eq!(vm.status().await.unwrap().template, Some(true));
    let err = expect_failure(&s.client, vm.create_snapshot(&SnapshotCreate::new("t1"))).await;
    assert!(err.pve_message().unwrap().contains("you can't take a snapshot if it's a template"), "{err}");
    // A template cannot be started.
    let err = expect_failure(&s.client, vm.start()).await;
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
}
