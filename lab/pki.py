"""The lab's certificates, keys and static tokens, made once with openssl and kept across restarts:
a CA; the API server's serving certificate; the API server's client certificate for the kubelet;
the kubelet's serving certificate; metrics-server's serving certificate; a front-proxy CA of its own
and the API server's client certificate from it (API aggregation); the service-account signing
keys; one token per identity."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from lab.services import FRONT_PROXY_CLIENT, METRICS_SERVER_NAMES, NODE, NODE_IP, Lab

# kube-apiserver's static token file: token,user,uid,"groups". The bootstrap RBAC policy binds the
# controller manager's, scheduler's and kube-proxy's users to their roles; the Node authorizer takes system:node:<name>
# in system:nodes; system:masters is cluster-admin.
IDENTITIES = (
    ("lab-admin", "system:masters"),
    ("system:kube-controller-manager", ""),
    ("system:kube-scheduler", ""),
    ("system:kube-proxy", ""),
    (f"system:node:{NODE}", "system:nodes"),
    # lab/services.py's metrics_server_objects bind it to what metrics-server needs.
    ("system:metrics-server", ""),
)


def _openssl(pki: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)


def _signed(pki: Path, name: str, subject: str, usage: str, san: str = "", ca: str = "ca") -> None:
    """`name`.crt/.key, signed by the lab's CA (or `ca`)."""
    _openssl(pki, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment", f"extendedKeyUsage={usage}"]
    if san:
        lines.append(f"subjectAltName={san}")
    (pki / f"{name}.ext").write_text("\n".join(lines) + "\n")
    _openssl(pki, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "825", "-extfile", f"{name}.ext", "-out", f"{name}.crt")


def make(lab: Lab) -> str:
    """Make what is missing; say what was made."""
    pki = lab.pki
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    made: list[str] = []
    if not (pki / "ca.crt").exists():
        _openssl(pki, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "3650", "-subj", "/CN=ml-deploy-lab-ca")
        for old in pki.glob("*.crt"):
            if old.name != "ca.crt":
                old.unlink()
        made.append("ca")
    certs = (
        ("apiserver", "/CN=kube-apiserver", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
        ("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth", ""),
        ("kubelet", f"/O=system:nodes/CN=system:node:{NODE}", "serverAuth", f"IP:{NODE_IP},IP:127.0.0.1,DNS:{NODE}"),
        ("metrics-server", "/CN=metrics-server", "serverAuth",
         ",".join([f"IP:{NODE_IP}", *(f"DNS:{n}" for n in METRICS_SERVER_NAMES)])),
    )
    for name, subject, usage, san in certs:
        if not (pki / f"{name}.crt").exists():
            _signed(pki, name, subject, usage, san)
            made.append(name)
    # The aggregation layer's client CA must not be the CA of ordinary clients: a certificate it
    # signs lets the API server assert any user to an extension API server
    # (kubernetes.io/docs/tasks/extend-kubernetes/configure-aggregation-layer/).
    if not (pki / "front-proxy-ca.crt").exists():
        _openssl(pki, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy-ca.key",
                 "-out", "front-proxy-ca.crt", "-days", "3650", "-subj", "/CN=ml-deploy-lab-front-proxy-ca")
        (pki / "front-proxy-client.crt").unlink(missing_ok=True)
        made.append("front-proxy-ca")
    if not (pki / "front-proxy-client.crt").exists():
        _signed(pki, "front-proxy-client", f"/CN={FRONT_PROXY_CLIENT}", "clientAuth", ca="front-proxy-ca")
        made.append("front-proxy-client")
    if not (pki / "sa.key").exists():
        _openssl(pki, "genrsa", "-out", "sa.key", "2048")
        _openssl(pki, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        made.append("service-account-keys")
    tokens = pki / "tokens.csv"
    have = {line.split(",")[1] for line in tokens.read_text().splitlines()} if tokens.exists() else set()
    missing = [(user, group) for user, group in IDENTITIES if user not in have]
    if missing:
        with tokens.open("a") as f:
            for user, group in missing:
                f.write(f'{secrets.token_hex(32)},{user},{user}{f",{chr(34)}{group}{chr(34)}" if group else ""}\n')
        tokens.chmod(0o600)
        made.append("tokens for " + ", ".join(user for user, _ in missing))
    for key in pki.glob("*.key"):
        key.chmod(0o600)
    return f"made {', '.join(made)} in {pki}" if made else f"kept {pki}"
