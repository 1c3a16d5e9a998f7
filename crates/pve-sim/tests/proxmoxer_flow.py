"""A provisioning flow with the third-party client proxmoxer against pve-sim.

Started by tests/third_party_client.rs with the simulator's address and API token in the
environment (PVE_HOST, PVE_PORT, PVE_USER, PVE_TOKEN_NAME, PVE_TOKEN_VALUE). Clones a
cloud-init template, sets cloud-init options, starts the VM, waits for every task, takes a
snapshot and a vzdump backup, stops and deletes the VM, asserting each step. Exits non-zero
with the failing step on stderr.
"""

import os
import sys
import time
import urllib.parse

import urllib3
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

urllib3.disable_warnings()

NODE = "pve1"
TEMPLATE = 9000
NEWID = 4242
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host"


def step(msg):
    print(f"proxmoxer: {msg}", flush=True)


def wait_task(prox, upid, timeout=60):
    """Polls tasks/{upid}/status until stopped; the exit status must be OK."""
    assert isinstance(upid, str) and upid.startswith("UPID:"), f"not a UPID: {upid!r}"
    node = upid.split(":")[1]
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = prox.nodes(node).tasks(upid).status.get()
        if status["status"] == "stopped":
            assert status.get("exitstatus") == "OK", f"task {upid} failed: {status}"
            return status
        time.sleep(0.05)
    raise AssertionError(f"task {upid} did not finish in {timeout}s")


def main():
    prox = ProxmoxAPI(
        os.environ["PVE_HOST"],
        port=int(os.environ["PVE_PORT"]),
        user=os.environ["PVE_USER"],
        token_name=os.environ["PVE_TOKEN_NAME"],
        token_value=os.environ["PVE_TOKEN_VALUE"],
        verify_ssl=False,
        timeout=30,
    )
    version = prox.version.get()
    assert version["version"].startswith("8."), version
    step(f"connected to PVE {version['version']}")

    node = prox.nodes(NODE)
    vm = node.qemu(NEWID)

    upid = node.qemu(TEMPLATE).clone.post(newid=NEWID, name="py-web1")
    status = wait_task(prox, upid)
    assert status["type"] == "qmclone", status
    config = vm.config.get()
    assert config["scsi0"].startswith(f"local-lvm:base-{TEMPLATE}-disk-0/vm-{NEWID}-disk-0"), config
    assert "template" not in config, config
    step("cloned the template (linked clone)")

    # PVE wants sshkeys percent-encoded before the form encoding, with %20 for spaces.
    encoded_keys = urllib.parse.quote(KEY, safe="")
    upid = vm.config.post(ciuser="debian", sshkeys=encoded_keys, ipconfig0="ip=192.0.2.20/24,gw=192.0.2.1", cores=2)
    wait_task(prox, upid)
    config = vm.config.get()
    assert config["ciuser"] == "debian", config
    assert config["sshkeys"] == encoded_keys, f"sshkeys stay encoded: {config['sshkeys']!r}"
    assert config["ipconfig0"] == "ip=192.0.2.20/24,gw=192.0.2.1", config
    assert int(config["cores"]) == 2, config
    step("set cloud-init config")

    try:
        vm.config.put(sshkeys=urllib.parse.quote("ssh-ed25519 AAAA", safe=""))
        raise AssertionError("an invalid ssh key was accepted")
    except ResourceException as e:
        assert e.status_code == 500, e
        assert "SSH public key validation error" in str(e), str(e)
    step("invalid sshkeys refused with PVE's reason phrase")

    wait_task(prox, vm.status.start.post())
    current = vm.status.current.get()
    assert current["status"] == "running", current
    assert current["qmpstatus"] == "running", current
    step("started, status running")

    wait_task(prox, vm.snapshot.post(snapname="before-upgrade", description="clean state"))
    snaps = vm.snapshot.get()
    names = [s["name"] for s in snaps]
    assert names[-1] == "current" and "before-upgrade" in names, snaps
    step("snapshot taken")

    status = wait_task(prox, node.vzdump.post(vmid=NEWID, storage="local", mode="snapshot", compress="zstd"))
    assert status["type"] == "vzdump", status
    backups = node.storage("local").content.get(content="backup", vmid=NEWID)
    assert len(backups) == 1, backups
    assert backups[0]["volid"].startswith(f"local:backup/vzdump-qemu-{NEWID}-"), backups
    step(f"backed up to {backups[0]['volid']}")

    wait_task(prox, vm.status.stop.post())
    assert vm.status.current.get()["status"] == "stopped"
    step("stopped")

    wait_task(prox, vm.delete(purge=1, **{"destroy-unreferenced-disks": 1}))
    try:
        vm.status.current.get()
        raise AssertionError("the VM still exists")
    except ResourceException as e:
        assert e.status_code == 500, e
        assert f"{NEWID}.conf' does not exist" in str(e), str(e)
    step("deleted")
    print("proxmoxer flow: OK", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure with its step
        print(f"proxmoxer flow FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
