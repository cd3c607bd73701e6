"""The lab's services, one row each (name, executable, command, readiness check, ports, the config it
reads), in start order: an image registry, a Docker engine and BuildKit for the docker-build provider,
and a one-node Kubernetes cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
a containerd with its CRI plugin, and a kubelet) whose pods run for real."""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

REGISTRY = "127.0.0.1:5000"
ETCD_URL, ETCD_PEER = "http://127.0.0.1:2379", "http://127.0.0.1:2380"
KUBE_PORT = 6443
KUBE_SERVER = f"https://127.0.0.1:{KUBE_PORT}"
NODE = "lab-node"
# Pod networking: a CNI bridge with host-local addresses and no masquerade, so pods reach this
# machine and one another and nothing else. The bridge is made before the kubelet starts and
# carries the node's address: kubelet refuses a loopback node IP (pkg/kubelet/nodestatus,
# validateNodeIP), and this kernel has no dummy interfaces, so the bridge is the one local address.
BRIDGE, POD_SUBNET, NODE_IP = "lab-cni0", "10.88.0.0/24", "10.88.0.1"
CNI_NETWORK = "ml-deploy-lab"
CNI_BIN = Path("/usr/lib/cni")
"""Debian's containernetworking-plugins (bridge, host-local, loopback, portmap)."""
SERVICE_CIDR = "10.96.0.0/24"
PAUSE_IMAGE = f"{REGISTRY}/ml-deploy/pause:3.10.2"
"""The pod sandbox image, built by scripts/lab from the Kubernetes source's build/pause/linux/pause.c."""
FRONT_PROXY_CLIENT = "front-proxy-client"
"""The name in the API server's client certificate for aggregated API servers (lab/pki.py)."""
METRICS_PORT = 4443
METRICS_SERVER_NAMES = ("metrics-server.kube-system.svc",)
"""The names the API server checks metrics-server's certificate for (<service>.<namespace>.svc)."""


@dataclass(frozen=True)
class Lab:
    """Where the lab keeps its state and finds its builds (from scripts/lab's environment)."""

    state: Path
    kube_bin: Path
    buildkit_bin: Path
    builder: str
    base_image: str
    pulumi_home: str
    metrics_server_bin: Path

    @classmethod
    def from_environ(cls, env: Optional[dict[str, str]] = None) -> "Lab":
        env = dict(os.environ if env is None else env)
        missing = [k for k in ("ML_DEPLOY_LAB", "LAB_KUBE_BIN", "LAB_BUILDKIT_BIN", "LAB_METRICS_SERVER_BIN")
                   if not env.get(k)]
        if missing:
            raise SystemExit(f"lab: {', '.join(missing)} not set (run it through scripts/lab)")
        return cls(Path(env["ML_DEPLOY_LAB"]), Path(env["LAB_KUBE_BIN"]), Path(env["LAB_BUILDKIT_BIN"]),
                   env.get("LAB_BUILDER", "ml-deploy-lab"), env.get("LAB_BASE_IMAGE", ""),
                   env.get("PULUMI_HOME", ""), Path(env["LAB_METRICS_SERVER_BIN"]))

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def docker_sock(self) -> Path:
        return self.state / "docker" / "docker.sock"

    @property
    def buildkit_sock(self) -> Path:
        return self.state / "buildkit" / "buildkitd.sock"

    @property
    def containerd_sock(self) -> Path:
        return self.state / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.state / "lab.env"

    @functools.lru_cache(maxsize=None)
    def token(self, user: str) -> str:
        """The static token of `user` (lab/pki.py's tokens.csv), read once."""
        for line in (self.pki / "tokens.csv").read_text().splitlines():
            token, name = line.split(",")[:2]
            if name == user:
                return token
        raise SystemExit(f"lab: no token for {user} in {self.pki / 'tokens.csv'}")


# ---- readiness checks --------------------------------------------------------------------------

def _quiet(*command: str) -> bool:
    return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _get(url: str | urllib.request.Request, context: Optional[ssl.SSLContext] = None, token: str = "") -> Optional[bytes]:
    """The body of a 200 answer to `url` (a URL or a request made already), None for any other
    answer or failure."""
    request = url if isinstance(url, urllib.request.Request) else urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return None


def _unverified() -> ssl.SSLContext:
    # The components' own serving certificates are self-signed at start; only /healthz is asked.
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _api_request(lab: Lab, path: str, method: str = "GET", body: Optional[dict] = None,
                 content_type: str = "application/json") -> urllib.request.Request:
    """A request to the lab's API server as lab-admin."""
    return urllib.request.Request(
        KUBE_SERVER + path, data=None if body is None else json.dumps(body).encode(), method=method,
        headers={"Authorization": f"Bearer {lab.token('lab-admin')}", "Content-Type": content_type})


def _api_context(lab: Lab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab.pki / "ca.crt"))


def _api(lab: Lab, path: str) -> Optional[bytes]:
    return _get(_api_request(lab, path), _api_context(lab))


def kubelet_ready(lab: Lab) -> bool:
    """Whether the kubelet started last serves: its healthz answers, its API port (where the API
    server and metrics-server reach it) accepts, and the node's Ready condition carries a heartbeat
    from this kubelet. After a restart the node object still says Ready from the kubelet before it
    (the controller waits its grace period before marking it NotReady), so Ready alone proves nothing."""
    if _get("http://127.0.0.1:10248/healthz") != b"ok":
        return False
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex((NODE_IP, 10250)) != 0:
            return False
    try:
        started = int((lab.run / "kubelet.pid").stat().st_mtime)
    except OSError:
        return False
    raw = _api(lab, f"/api/v1/nodes/{NODE}")
    if raw is None:
        return False
    for c in json.loads(raw).get("status", {}).get("conditions", []):
        if c.get("type") == "Ready" and c.get("status") == "True":
            beat = datetime.fromisoformat(c.get("lastHeartbeatTime", "1970-01-01T00:00:00Z").replace("Z", "+00:00"))
            return beat.timestamp() >= started
    return False


# ---- config files --------------------------------------------------------------------------------

def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def kubeconfig(lab: Lab, user: str) -> str:
    """A kubeconfig for the lab's API server as `user` (a static token)."""
    ca = base64.b64encode((lab.pki / "ca.crt").read_bytes()).decode()
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "ml-deploy-lab", "cluster": {"server": KUBE_SERVER, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": lab.token(user)}}],
        "contexts": [{"name": "ml-deploy-lab", "context": {"cluster": "ml-deploy-lab", "user": user, "namespace": "default"}}],
        "current-context": "ml-deploy-lab",
    }, indent=1)


def _component_kubeconfig(lab: Lab, user: str) -> Path:
    path = lab.state / "kube" / f"{user.replace(':', '-')}.kubeconfig"
    _write(path, kubeconfig(lab, user), 0o600)
    return path


def _registry_config(lab: Lab) -> None:
    # distribution 2.8's configuration format (docs/configuration.md); delete enabled so tests can
    # remove what they push.
    data = lab.state / "registry" / "data"
    data.mkdir(parents=True, exist_ok=True)
    _write(lab.state / "registry" / "config.yml", f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: {REGISTRY}
""")


def _docker_dirs(lab: Lab) -> None:
    for sub in ("data", "exec"):
        (lab.state / "docker" / sub).mkdir(parents=True, exist_ok=True)


def _buildkit_config(lab: Lab) -> None:
    (lab.state / "buildkit" / "root").mkdir(parents=True, exist_ok=True)
    # The lab's registry speaks plain HTTP on 127.0.0.1 (buildkitd.toml's [registry] section).
    _write(lab.state / "buildkit" / "buildkitd.toml", f'[registry."{REGISTRY}"]\n  http = true\n  insecure = true\n')
    # The builder, in buildx's store format (buildx store/nodegroup.go) under the lab's own
    # BUILDX_CONFIG, so nobody's ~/.docker changes.
    builder = {"Name": lab.builder, "Driver": "remote", "Nodes": [{
        "Name": f"{lab.builder}0", "Endpoint": f"unix://{lab.buildkit_sock}", "Platforms": None,
        "DriverOpts": None, "Flags": None, "Files": None}], "Dynamic": False}
    _write(lab.state / "buildx" / "instances" / lab.builder, json.dumps(builder) + "\n")


def _etcd_dirs(lab: Lab) -> None:
    (lab.state / "etcd").mkdir(parents=True, exist_ok=True)


def _bridge_up() -> None:
    """The pod bridge with the node's address (see BRIDGE); the CNI bridge plugin then finds it made."""
    if not _quiet("ip", "link", "show", BRIDGE):
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    if NODE_IP not in subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE],
                                     capture_output=True, text=True).stdout:
        subprocess.run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    # A pod answering a Service's virtual IP for a pod on the same bridge must pass iptables, or the
    # reply skips kube-proxy's NAT: "the plugin must set the net/bridge/bridge-nf-call-iptables sysctl
    # to 1" (kubernetes.io, network plugins, "Network Plugin Requirements").
    nf_call = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not nf_call.exists():
        _quiet("modprobe", "br_netfilter")
    if nf_call.exists() and nf_call.read_text().strip() != "1":
        nf_call.write_text("1\n")


def _containerd_config(lab: Lab) -> None:
    base = lab.state / "containerd"
    for sub in ("root", "state", "opt"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    net_d = lab.state / "cni" / "net.d"
    # containerd 1.6's config version 2 (docs/cri/config.md): the CRI plugin on the lab's own socket
    # and folders, runc with cgroupfs (the host mounts cgroup v1 and no systemd runs), the sandbox
    # image from the lab's registry, which is plain HTTP on 127.0.0.1.
    _write(base / "config.toml", f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
[grpc]
  address = "{lab.containerd_sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine withholds CAP_SYS_RESOURCE even from root, so no process may lower its OOM score
  # (the pause container asks -998, Guaranteed pods -997): clamp to containerd's own, as rootless
  # setups do.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{base / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{net_d}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{REGISTRY}"]
    endpoint = ["http://{REGISTRY}"]
""")
    # The CNI spec's network configuration list (containernetworking/cni SPEC.md): a bridge with
    # host-local addresses, no masquerade (pods reach nothing beyond this machine), and portmap for
    # hostPort. containerd adds the loopback plugin itself. Pods get no default route, only one to
    # the Services' virtual IPs through the node (host-local's `routes`; a route without `gw` takes
    # the range's gateway, containernetworking/cni issue 629), so a pod reaches a Service and
    # nothing beyond this machine.
    conflist = {"cniVersion": "1.0.0", "name": CNI_NETWORK, "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                  "routes": [{"dst": SERVICE_CIDR}], "dataDir": str(lab.state / "cni" / "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}
    _write(net_d / "10-lab.conflist", json.dumps(conflist, indent=1) + "\n")
    _bridge_up()


def _kubelet_config(lab: Lab) -> None:
    base = lab.state / "kubelet"
    base.mkdir(parents=True, exist_ok=True)
    _component_kubeconfig(lab, f"system:node:{NODE}")
    # KubeletConfiguration v1beta1 (kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/).
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "tlsCertFile": str(lab.pki / "kubelet.crt"), "tlsPrivateKeyFile": str(lab.pki / "kubelet.key"),
        # The API server's client certificate (lab/pki.py) is how logs, exec and port-forward reach it.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(lab.pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{lab.containerd_sock}",
        # containerd 1.6 cannot tell the kubelet its cgroup driver (the CRI RuntimeConfig call came
        # with 1.7), so the kubelet's own setting is used: cgroupfs, as runc is told above.
        "cgroupDriver": "cgroupfs",
        # kubelet 1.35+ refuses cgroup v1 unless failCgroupV1 is false (KubeletConfiguration
        # v1beta1 reference, failCgroupV1); this host mounts only cgroup v1.
        "failCgroupV1": False,
        "failSwapOn": False,
        # Not below 0: see restrict_oom_score_adj above (the kubelet's own default is -999).
        "oomScoreAdj": 0,
        # A test machine's disk and memory are not the node's to guard: no evictions, no image GC.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "maxPods": 40,
        "resolvConf": "/etc/resolv.conf", "hairpinMode": "hairpin-veth",
        "shutdownGracePeriod": "0s",
        "staticPodPath": "",
    }
    _write(base / "config.json", json.dumps(config, indent=1) + "\n")


def _send(lab: Lab, method: str, path: str, body: dict, content_type: str = "application/json") -> int:
    """An API request as lab-admin: its HTTP status."""
    request = _api_request(lab, path, method, body, content_type)
    try:
        with urllib.request.urlopen(request, timeout=10, context=_api_context(lab)) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def metrics_server_objects(lab: Lab) -> list[tuple[str, dict]]:
    """(collection path, object) for metrics-server, as its release manifest has them
    (kubernetes-sigs/metrics-server, manifests/base), but for a process on this machine: a Service
    without a selector whose endpoint is the node's address, and the lab's CA for its certificate."""
    rbac, ks = "/apis/rbac.authorization.k8s.io/v1", "kube-system"
    user = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:metrics-server"}]

    def role_ref(kind: str, name: str) -> dict:
        return {"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name}

    return [
        (f"{rbac}/clusterroles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                  "metadata": {"name": "system:metrics-server"}, "rules": [
            {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]}),
        (f"{rbac}/clusterrolebindings", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                                         "metadata": {"name": "system:metrics-server"},
                                         "roleRef": role_ref("ClusterRole", "system:metrics-server"), "subjects": user}),
        (f"{rbac}/clusterrolebindings", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                                         "metadata": {"name": "metrics-server:system:auth-delegator"},
                                         "roleRef": role_ref("ClusterRole", "system:auth-delegator"), "subjects": user}),
        (f"{rbac}/namespaces/{ks}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "metrics-server-auth-reader", "namespace": ks},
            "roleRef": role_ref("Role", "extension-apiserver-authentication-reader"), "subjects": user}),
        (f"/api/v1/namespaces/{ks}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "metrics-server", "namespace": ks},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": METRICS_PORT}]}}),
        (f"/api/v1/namespaces/{ks}/endpoints", {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "metrics-server", "namespace": ks},
            "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [{"name": "https", "port": METRICS_PORT}]}]}),
        ("/apis/apiregistration.k8s.io/v1/apiservices", {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
                     "service": {"name": "metrics-server", "namespace": ks, "port": 443},
                     "caBundle": base64.b64encode((lab.pki / "ca.crt").read_bytes()).decode()}}),
    ]


def _metrics_server_setup(lab: Lab) -> None:
    for path, obj in metrics_server_objects(lab):
        status = _send(lab, "POST", path, obj)
        if status == 409:  # kept from an earlier `up`: made the same again
            status = _send(lab, "PATCH", f"{path}/{obj['metadata']['name']}", obj, "application/merge-patch+json")
        if status >= 300:
            raise SystemExit(f"lab: {obj['kind']} {obj['metadata']['name']}: the API server answered {status}")


def pod_metrics_served(lab: Lab) -> bool:
    """Whether the metrics API answers through the API server with the node's usage."""
    return _api(lab, f"/apis/metrics.k8s.io/v1beta1/nodes/{NODE}") is not None


@dataclass(frozen=True)
class Service:
    """One process the lab runs."""

    name: str
    exe: Callable[[Lab], str]
    """The executable: a running service is one whose pidfile names a live process of it."""
    args: Callable[[Lab], list[str]]
    ready: Callable[[Lab], bool]
    where: Callable[[Lab], str]
    ports: tuple[int, ...] = ()
    """TCP ports on 127.0.0.1 it listens on: free before it starts, free again once it stops."""
    timeout_s: int = 60
    prepare: Optional[Callable[[Lab], None]] = None
    """Writes the config it reads, before it starts."""


def _which(name: str) -> Callable[[Lab], str]:
    return lambda _lab: shutil.which(name) or name


SERVICES: tuple[Service, ...] = (
    Service(
        "dockerd", _which("dockerd"),
        # No bridge, no iptables, no NAT: containers and builds use --network host and reach only
        # what the host reaches; the registry on 127.0.0.1 is plain HTTP.
        lambda lab: ["--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
                     "--storage-driver=overlay2", "--data-root", str(lab.state / "docker" / "data"),
                     "--exec-root", str(lab.state / "docker" / "exec"), "-H", f"unix://{lab.docker_sock}",
                     "--pidfile", str(lab.state / "docker" / "dockerd.pid"), "--insecure-registry", REGISTRY],
        lambda lab: _quiet("docker", "-H", f"unix://{lab.docker_sock}", "version"),
        lambda lab: f"unix://{lab.docker_sock}", prepare=_docker_dirs),
    Service(
        "registry", _which("docker-registry"),
        lambda lab: ["serve", str(lab.state / "registry" / "config.yml")],
        lambda _lab: _get(f"http://{REGISTRY}/v2/") is not None,
        lambda _lab: f"http://{REGISTRY}", ports=(5000,), timeout_s=30, prepare=_registry_config),
    Service(
        "buildkitd", lambda lab: str(lab.buildkit_bin / "buildkitd"),
        # Builds ask for host networking (workspace.build_network: host): there is no bridge to give them.
        lambda lab: ["--root", str(lab.state / "buildkit" / "root"), "--addr", f"unix://{lab.buildkit_sock}",
                     "--config", str(lab.state / "buildkit" / "buildkitd.toml"), "--oci-worker=true",
                     "--containerd-worker=false", "--allow-insecure-entitlement", "network.host"],
        lambda lab: _quiet(str(lab.buildkit_bin / "buildctl"), "--addr", f"unix://{lab.buildkit_sock}", "debug", "workers"),
        lambda lab: f"unix://{lab.buildkit_sock}", prepare=_buildkit_config),
    Service(
        "etcd", _which("etcd"),
        lambda lab: ["--name", "lab", "--data-dir", str(lab.state / "etcd" / "data"),
                     "--listen-client-urls", ETCD_URL, "--advertise-client-urls", ETCD_URL,
                     "--listen-peer-urls", ETCD_PEER, "--initial-advertise-peer-urls", ETCD_PEER,
                     "--initial-cluster", f"lab={ETCD_PEER}"],
        lambda _lab: b'"health":"true"' in (_get(f"{ETCD_URL}/health") or b""),
        lambda _lab: ETCD_URL, ports=(2379, 2380), timeout_s=30, prepare=_etcd_dirs),
    Service(
        "kube-apiserver", lambda lab: str(lab.kube_bin / "kube-apiserver"),
        lambda lab: [
            f"--etcd-servers={ETCD_URL}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={KUBE_PORT}", f"--tls-cert-file={lab.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={lab.pki / 'apiserver.key'}", f"--token-auth-file={lab.pki / 'tokens.csv'}",
            f"--client-ca-file={lab.pki / 'ca.crt'}",
            # Node: the kubelet's own token (system:node:lab-node) reaches only its node's objects.
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={lab.pki / 'sa.pub'}", f"--service-account-signing-key-file={lab.pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--endpoint-reconciler-type=none", "--profiling=false",
            # To the kubelet (logs, exec, port-forward): its address on the pod bridge, with a client
            # certificate it trusts, checking its serving certificate against the lab's CA.
            f"--kubelet-client-certificate={lab.pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={lab.pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={lab.pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer, for metrics-server's metrics.k8s.io
            # (kubernetes.io/docs/tasks/extend-kubernetes/configure-aggregation-layer/): the API
            # server's client certificate from the front-proxy CA, and the endpoint's address rather
            # than the Service's cluster IP (the API server runs on this machine, outside the pods' network).
            f"--requestheader-client-ca-file={lab.pki / 'front-proxy-ca.crt'}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--proxy-client-cert-file={lab.pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={lab.pki / 'front-proxy-client.key'}",
            "--enable-aggregator-routing=true"],
        lambda lab: _api(lab, "/readyz") is not None,
        lambda _lab: KUBE_SERVER, ports=(KUBE_PORT,)),
    Service(
        "kube-controller-manager", lambda lab: str(lab.kube_bin / "kube-controller-manager"),
        lambda lab: [
            f"--kubeconfig={_component_kubeconfig(lab, 'system:kube-controller-manager')}",
            f"--authentication-kubeconfig={_component_kubeconfig(lab, 'system:kube-controller-manager')}",
            f"--authorization-kubeconfig={_component_kubeconfig(lab, 'system:kube-controller-manager')}",
            "--bind-address=127.0.0.1", "--secure-port=10257", "--leader-elect=false",
            f"--service-account-private-key-file={lab.pki / 'sa.key'}", f"--root-ca-file={lab.pki / 'ca.crt'}",
            "--use-service-account-credentials=true", f"--service-cluster-ip-range={SERVICE_CIDR}",
            # One node: a node that stops reporting is marked NotReady after the default 50 s
            # grace; its pods are not evicted from the only node there is.
            "--controllers=*,-nodeipam",
            # The HPA acts on what a test can wait for: every 5 s (default 15 s) and scaling down
            # 20 s after the load is gone (default 5 minutes; kube-controller-manager reference).
            "--horizontal-pod-autoscaler-sync-period=5s", "--horizontal-pod-autoscaler-downscale-stabilization=20s"],
        lambda _lab: _get("https://127.0.0.1:10257/healthz", _unverified()) == b"ok",
        lambda _lab: "https://127.0.0.1:10257", ports=(10257,)),
    Service(
        "kube-scheduler", lambda lab: str(lab.kube_bin / "kube-scheduler"),
        lambda lab: [
            f"--kubeconfig={_component_kubeconfig(lab, 'system:kube-scheduler')}",
            f"--authentication-kubeconfig={_component_kubeconfig(lab, 'system:kube-scheduler')}",
            f"--authorization-kubeconfig={_component_kubeconfig(lab, 'system:kube-scheduler')}",
            "--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false"],
        lambda _lab: _get("https://127.0.0.1:10259/healthz", _unverified()) == b"ok",
        lambda _lab: "https://127.0.0.1:10259", ports=(10259,)),
    Service(
        "containerd", _which("containerd"),
        lambda lab: ["--config", str(lab.state / "containerd" / "config.toml")],
        lambda lab: _quiet("ctr", "--address", str(lab.containerd_sock), "version"),
        lambda lab: f"unix://{lab.containerd_sock}", prepare=_containerd_config),
    Service(
        "kubelet", lambda lab: str(lab.kube_bin / "kubelet"),
        lambda lab: [
            f"--config={lab.state / 'kubelet' / 'config.json'}",
            f"--kubeconfig={lab.state / 'kube' / f'system-node-{NODE}.kubeconfig'}",
            f"--root-dir={lab.state / 'kubelet' / 'root'}", f"--hostname-override={NODE}", f"--node-ip={NODE_IP}",
            f"--cert-dir={lab.state / 'kubelet' / 'pki'}"],
        kubelet_ready, lambda _lab: f"https://{NODE_IP}:10250 (node {NODE})", ports=(10248,), timeout_s=120,
        prepare=_kubelet_config),
    Service(
        "kube-proxy", lambda lab: str(lab.kube_bin / "kube-proxy"),
        # Services' cluster IPs routed on this machine (iptables mode), so a client here reaches a
        # Service as a pod in the cluster would, and a rollout's endpoint changes apply to it.
        lambda lab: [
            f"--kubeconfig={_component_kubeconfig(lab, 'system:kube-proxy')}", "--proxy-mode=iptables",
            f"--hostname-override={NODE}", f"--cluster-cidr={POD_SUBNET}", "--bind-address=127.0.0.1",
            "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
            # No machine-wide sysctls: no conntrack table resize, no route_localnet for localhost NodePorts.
            "--conntrack-max-per-core=0", "--iptables-localhost-nodeports=false", "--oom-score-adj=0"],
        lambda _lab: _get("http://127.0.0.1:10256/healthz") is not None,
        lambda _lab: f"iptables rules for {SERVICE_CIDR}", ports=(10256, 10249)),
    Service(
        "metrics-server", lambda lab: str(lab.metrics_server_bin / "metrics-server"),
        # The resource metrics the HPA reads (metrics.k8s.io), scraped from the kubelet's
        # /metrics/resource every 10 s (the least it takes, default 60 s; a scrape must then finish in
        # less: 5 s, default 10 s; metrics-server v0.8.0's cmd/metrics-server/app/options), as the
        # user its ClusterRole is bound to, checking the kubelet's certificate against the lab's CA.
        lambda lab: [
            f"--kubeconfig={_component_kubeconfig(lab, 'system:metrics-server')}",
            f"--authentication-kubeconfig={_component_kubeconfig(lab, 'system:metrics-server')}",
            f"--authorization-kubeconfig={_component_kubeconfig(lab, 'system:metrics-server')}",
            f"--bind-address={NODE_IP}", f"--secure-port={METRICS_PORT}",
            f"--tls-cert-file={lab.pki / 'metrics-server.crt'}", f"--tls-private-key-file={lab.pki / 'metrics-server.key'}",
            f"--kubelet-certificate-authority={lab.pki / 'ca.crt'}", "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port", "--metric-resolution=10s", "--kubelet-request-timeout=5s"],
        pod_metrics_served, lambda _lab: f"https://{NODE_IP}:{METRICS_PORT} (metrics.k8s.io)", timeout_s=90,
        prepare=_metrics_server_setup),
)

