"""`scripts/lab stop` leaves nothing behind: no process, container, mount, network namespace, bridge,
iptables chain or listening port of the lab, checked from outside the lab's own code (/proc, ip,
iptables, the sockets). Runs after the other lab tests (file order) with the lab up, and starts the
lab again afterwards (seconds, from its cache) so a developer's lab is as it was.

Needs `bash scripts/lab up` (skipped otherwise, saying so).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from lab.services import SERVICES
from tests.helpers import ROOT, lab_environ

pytestmark = pytest.mark.lab  # scripts/test runs these beside the others

LAB = ROOT / "scripts" / "lab"
# Every executable the lab starts, and what those start (shims, runc, the pods' pause and python).
LAB_PROGRAMS = {"dockerd", "docker-registry", "registry", "buildkitd", "etcd", "kube-apiserver",
                "kube-controller-manager", "kube-scheduler", "containerd", "containerd-shim-runc-v2",
                "kubelet", "kube-proxy", "metrics-server", "pause"}
LAB_PORTS = tuple(port for service in SERVICES for port in service.ports)


def _lab_processes(state: Path) -> list[str]:
    """Processes of a lab program, or with the lab's folder on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if name in LAB_PROGRAMS or f"{state}/" in cmdline:
            found.append(f"{entry.name} {name}: {cmdline[:200]}")
    return found


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_stop_leaves_no_process_mount_namespace_bridge_chain_or_port():
    env = lab_environ()
    state = Path(env["ML_DEPLOY_LAB"])
    stopped = subprocess.run(["bash", str(LAB), "stop"], capture_output=True, text=True)
    try:
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        time.sleep(1)  # processes killed by the stop are reaped by their parents
        assert _lab_processes(state) == []
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        assert [m for m in mounts if m.startswith(f"{state}/")] == []
        # Pod sandboxes' network namespaces (containerd names them cni-<uuid>) and the pod bridge.
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert [n for n in netns.splitlines() if n.startswith("cni-")] == []
        assert subprocess.run(["ip", "link", "show", "lab-cni0"], capture_output=True).returncode != 0
        # kube-proxy's and the kubelet's chains (KUBE-SERVICES, KUBE-FIREWALL, ...), in every table.
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        assert [r for r in rules.splitlines() if "KUBE-" in r] == []
        assert [p for p in LAB_PORTS if _listening(p)] == []
    finally:
        # The lab as it was: up again, from its cache.
        up = subprocess.run(["bash", str(LAB), "up"], capture_output=True, text=True)
        if up.returncode != 0:
            pytest.fail("`scripts/lab up` after the stop failed:\n" + up.stderr[-2000:])
