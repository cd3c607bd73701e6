"""Start, check and stop the lab's services (lab/services.py) by pid: each in its own session with
its output in `logs/<name>.log` and its pid in `run/<name>.pid`. A service runs when its pidfile
names a live process of its executable, so a reused pid of something else is never taken, nor
stopped, for it. Stopping leaves no process, container, mount, network namespace or bridge behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

from lab.services import BRIDGE, POD_SUBNET, REGISTRY, SERVICES, Lab, Service, kubeconfig

STOP_TIMEOUT_S = 30


class LabError(Exception):
    """A service could not be started or stopped; the message says which and shows its log."""


def pid_of(lab: Lab, service: Service) -> Optional[int]:
    """The running service's pid, if it runs."""
    try:
        pid = int((lab.run / f"{service.name}.pid").read_text().strip())
        exe = os.path.realpath(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    return pid if exe == os.path.realpath(service.exe(lab)) else None


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(lab: Lab, service: Service) -> str:
    """Reuse the running service or start it, then wait until it is ready; what happened, in a line."""
    lab.logs.mkdir(parents=True, exist_ok=True)
    lab.run.mkdir(parents=True, exist_ok=True)
    log = lab.logs / f"{service.name}.log"
    pid = pid_of(lab, service)
    if pid is not None:
        what = f"reused pid {pid}"
    else:
        busy = [p for p in service.ports if port_busy(p)]
        if busy:
            raise LabError(f"{service.name}: port(s) {busy} already in use by a process the lab did not start")
        if service.prepare is not None:
            service.prepare(lab)
        with log.open("ab") as out:
            proc = subprocess.Popen([service.exe(lab), *service.args(lab)], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        pid = proc.pid
        (lab.run / f"{service.name}.pid").write_text(f"{pid}\n")
        what = f"started pid {pid}"
    deadline = time.monotonic() + service.timeout_s
    while not service.ready(lab):
        if pid_of(lab, service) is None or _exited(pid):
            raise LabError(f"{service.name} (pid {pid}) exited; see {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"{service.name} (pid {pid}) not ready after {service.timeout_s}s; see {log}:\n{_tail(log)}")
        time.sleep(0.2)
    return f"{what}, ready on {service.where(lab)}"


def all_running(lab: Lab) -> str:
    """After `up`: every service still runs (one that passed its check and then died, as a kubelet
    failing after its first status report would, is named with its log)."""
    dead = [service for service in SERVICES if pid_of(lab, service) is None]
    if dead:
        raise LabError("; ".join(f"{s.name} exited after it was ready; see {lab.logs / f'{s.name}.log'}:\n"
                                 f"{_tail(lab.logs / f'{s.name}.log')}" for s in dead))
    return f"{len(SERVICES)} services"


def _exited(pid: int) -> bool:
    """Whether `pid` is gone (reaping it if it is our own child that died)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _stop_pid(pid: int) -> str:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _exited(pid):
        return ""
    os.kill(pid, signal.SIGKILL)
    while not _exited(pid):
        time.sleep(0.1)
    return f" (ignored SIGTERM for {STOP_TIMEOUT_S}s: killed)"


def stop(lab: Lab, service: Service) -> tuple[str, list[str]]:
    """Stop the service if it runs and clean up after it: (what happened, problems left)."""
    t0 = time.monotonic()
    pid = pid_of(lab, service)
    problems: list[str] = []
    if service.name == "containerd" and pid is not None:
        problems += _remove_pods(lab)
    if pid is None:
        what = "not running"
    else:
        what = f"stopped pid {pid}{_stop_pid(pid)} in {time.monotonic() - t0:.1f}s"
    (lab.run / f"{service.name}.pid").unlink(missing_ok=True)
    for port in service.ports:
        deadline = time.monotonic() + 10
        while port_busy(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if port_busy(port):
            problems.append(f"port {port} still in use after stopping {service.name}")
    cleanup = {"containerd": _after_containerd, "dockerd": _after_dockerd, "kubelet": _after_kubelet,
               "kube-proxy": _after_kube_proxy}.get(service.name)
    if cleanup is not None:
        problems += cleanup(lab)
    return what, problems


# ---- what a stopped node leaves ------------------------------------------------------------------

def _ctr(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "--address", str(lab.containerd_sock), "--namespace", "k8s.io", *args],
                          capture_output=True, text=True)


def _remove_pods(lab: Lab) -> list[str]:
    """Every pod container and sandbox of the node, killed and removed while containerd still runs
    (the kubelet is stopped first, so none comes back)."""
    problems = []
    for line in _ctr(lab, "tasks", "ls").stdout.splitlines()[1:]:
        task = line.split()[0]
        _ctr(lab, "tasks", "kill", "--signal", "SIGKILL", task)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any("RUNNING" in l for l in _ctr(lab, "tasks", "ls").stdout.splitlines()[1:]):
        time.sleep(0.2)
    for line in _ctr(lab, "tasks", "ls").stdout.splitlines()[1:]:
        _ctr(lab, "tasks", "delete", "--force", line.split()[0])
    for container in _ctr(lab, "containers", "ls", "--quiet").stdout.split():
        result = _ctr(lab, "containers", "delete", container)
        if result.returncode != 0:
            problems.append(f"container {container}: {result.stderr.strip()}")
        # libcni's cache of the sandbox's attachments (its default folder, which containerd 1.6 keeps).
        for cached in Path("/var/lib/cni/results").glob(f"*-{container}-*"):
            cached.unlink(missing_ok=True)
    return problems


def _lab_mounts(lab: Lab) -> list[str]:
    prefix = str(lab.state) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def _unmount_under(lab: Lab, folder: Path) -> list[str]:
    problems = []
    for point in _lab_mounts(lab):
        if point.startswith(str(folder) + "/") and subprocess.run(["umount", point], capture_output=True).returncode != 0:
            problems.append(f"could not unmount {point}")
    return problems


def _pod_netns() -> list[str]:
    """The network namespaces the lab's CNI network gave pods: those with an address in its subnet."""
    found = []
    for name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n"):
        ns = name.split(" ")[0]
        if not ns.startswith("cni-"):
            continue
        addrs = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr"], capture_output=True, text=True).stdout
        if f" {POD_SUBNET.rsplit('.', 1)[0]}." in addrs:
            found.append(ns)
    return found


def _after_kube_proxy(lab: Lab) -> list[str]:
    """Its iptables rules, removed by kube-proxy itself (`--cleanup`)."""
    result = subprocess.run([str(lab.kube_bin / "kube-proxy"), "--cleanup", "--proxy-mode=iptables"],
                            capture_output=True, text=True)
    return [] if result.returncode == 0 else [f"kube-proxy --cleanup: {result.stderr.strip()[-300:]}"]


# The kubelet's own iptables chains (pkg/kubelet/kubelet_network_linux.go: a canary per table,
# KUBE-FIREWALL, which drops martian packets to 127.0.0.0/8, and the hint chain that tells
# iptables-wrapper which backend is in use), for IPv4 and IPv6.
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def _remove_chains(tool: str, chains: tuple[str, ...]) -> list[str]:
    problems = []
    for table in ("filter", "nat", "mangle"):
        rules = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True, text=True).stdout.splitlines()
        # Jumps into the chains first, then the chains themselves.
        for rule in rules:
            words = rule.split()
            if words[:1] == ["-A"] and words[1] not in chains and any(f"-j {c}" in rule for c in chains):
                subprocess.run([tool, "-w", "-t", table, "-D", *words[1:]], capture_output=True)
        for chain in chains:
            if f"-N {chain}" in rules:
                subprocess.run([tool, "-w", "-t", table, "-F", chain], capture_output=True)
                if subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True).returncode != 0:
                    problems.append(f"{tool} -t {table}: could not remove chain {chain}")
    return problems


def _after_kubelet(lab: Lab) -> list[str]:
    problems = _unmount_under(lab, lab.state / "kubelet")
    for tool in ("iptables", "ip6tables"):
        problems += _remove_chains(tool, KUBELET_CHAINS)
    return problems


def _after_containerd(lab: Lab) -> list[str]:
    problems = _unmount_under(lab, lab.state / "containerd")
    for ns in _pod_netns():
        if subprocess.run(["ip", "netns", "delete", ns], capture_output=True).returncode != 0:
            problems.append(f"could not delete network namespace {ns}")
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)

    stray = _running_from(lab.state / "containerd")
    if stray:
        problems.append(f"still running from {lab.state / 'containerd'}: {stray}")
    return problems


def _after_dockerd(lab: Lab) -> list[str]:
    # dockerd leaves its network namespace (and at times its data root) mounted under its folders;
    # anything still running from them (a container shim, say) would have been started by the lab too.
    problems = _unmount_under(lab, lab.state / "docker")
    stray = _running_from(lab.state / "docker")
    if stray:
        problems.append(f"still running from {lab.state / 'docker'}: {stray}")
    return problems


def _running_from(folder: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", "--", f"{folder}/"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if line.strip()]


# ---- what clients read ----------------------------------------------------------------------------

def write_client_config(lab: Lab) -> str:
    """The kubeconfig (cluster-admin) and the env file to source."""
    path = lab.kubeconfig
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(kubeconfig(lab, "lab-admin"))
    tmp.chmod(0o600)
    tmp.replace(path)
    env = {
        "ML_DEPLOY_LAB": str(lab.state), "DOCKER_HOST": f"unix://{lab.docker_sock}", "KUBECONFIG": str(path),
        "ML_DEPLOY_LAB_KUBE_SERVER": "https://127.0.0.1:6443", "ML_DEPLOY_LAB_KUBE_CONTEXT": "ml-deploy-lab",
        "ML_DEPLOY_LAB_KUBECTL": str(lab.kube_bin / "kubectl"), "ML_DEPLOY_LAB_REGISTRY": REGISTRY,
        "BUILDX_CONFIG": str(lab.state / "buildx"), "ML_DEPLOY_LAB_BUILDER": lab.builder,
        "ML_DEPLOY_LAB_BASE_IMAGE": lab.base_image, "ML_DEPLOY_LAB_PULUMI_HOME": lab.pulumi_home,
    }
    lines = ["# Written by scripts/lab up; source it to use the lab."]
    lines += [f"export {k}={json.dumps(v)}" for k, v in env.items()]
    lines.append(f'export PATH={json.dumps(str(lab.kube_bin))}"${{PATH:+:$PATH}}"')
    tmp = lab.env_file.with_name(lab.env_file.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o644)
    tmp.replace(lab.env_file)
    return f"{lab.env_file}, {path}"


def status(lab: Lab) -> tuple[str, bool]:
    """A table of the services (state, pid, address) and whether all of them run."""
    rows = [f"{'SERVICE':<24} {'STATE':<8} {'PID':<8} ADDRESS"]
    everything = True
    for service in SERVICES:
        pid = pid_of(lab, service)
        everything = everything and pid is not None
        rows.append(f"{service.name:<24} {'running' if pid else 'stopped':<8} {pid or '-'!s:<8} {service.where(lab)}")
    return "\n".join(rows), everything


def rss_mib(lab: Lab) -> float:
    """The resident memory of every lab process and its children (pods, shims), in MiB."""
    pids = [p for p in (pid_of(lab, s) for s in SERVICES) if p]
    # Container shims leave their parent: they are found by the lab folder on their command line.
    pids += [int(line.split()[0]) for line in _running_from(lab.state)]
    total = 0
    seen: set[int] = set()
    while pids:
        pid = pids.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(l.split()[1]) for l in f if l.startswith("VmRSS:")), 0)
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return total / 1024
