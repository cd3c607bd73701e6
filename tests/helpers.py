"""What the tests share: the seed example and stack config, the program under the mocks with
CDK-style assertions, config rejection, diffs between runs, the scoring runtime as a process, an
HTTPS server on 127.0.0.1 for service stand-ins, and IoT Edge manifests against their schemas."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import shlex
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import pytest

from cli import offline
from cli.offline import Recording
from infra.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "scoring_templates"
# The built-in AcrPull role (MicrosoftDocs/azure-docs built-in-roles/containers.md), kept apart from
# components/roles.py so that a wrong id there fails the tests.
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
SEED = {"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]}



# ---- the program under the mocks ------------------------------------------------------------

# Azure Storage's emulator (installed by scripts/setup) and its documented development account, which
# exists only inside the emulator (the `azurite` fixture in conftest.py starts it).
AZURITE = ROOT / ".ml-deploy" / "tools" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def dev_config(pkl: Path) -> dict[str, Any]:
    """The README's dev stack config, with the model at `pkl`."""
    return {
        "azure-native:location": "westeurope",
        "ml-deploy:workspace": {"name": "mlws", "protect": False},
        "ml-deploy:models": [
            {"name": "diabetes-ridge", "path": str(pkl), "description": "Ridge regression on the diabetes data",
             "tags": {"data": "diabetes", "type": "regression"}},
        ],
        "ml-deploy:images": [
            {"name": "diabetes", "models": ["diabetes-ridge"],
             "execution_script": str(TEMPLATES / "sklearn" / "score.py"),
             "conda_file": str(TEMPLATES / "sklearn" / "env.yml"),
             "description": "Image with ridge regression model", "tags": {"data": "diabetes"}},
        ],
        "ml-deploy:services": [
            {"name": "diabetes-aci", "image": "diabetes", "target": "aci", "cpu_cores": 1, "memory_gb": 1,
             "auth_enabled": True, "enable_app_insights": True},
        ],
    }


def run_config(config: dict[str, Any], stack: str = "dev",
               stack_outputs: dict[str, dict[str, Any]] | None = None) -> Recording:
    """Run the program under the mocks exactly as the engine would hand it this config.
    `stack_outputs` answers StackReferences by fully qualified name (none by default)."""
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    return offline.run(values, stack=stack, stack_outputs=stack_outputs or {})


def unseen_public_services(recording: Recording, stack: str) -> list[str]:
    """The services of a plan (run with auth off) that answer beyond their host, by their `scoring_uri`,
    but of whose resources the public-service-auth rule flags none: a public endpoint that no target's
    reader (`Target.public_endpoints`) sees. A scoring URI unknown under the mocks is not judged."""
    from urllib.parse import urlparse

    from policy import rules
    from policy.endpoints import LOOPBACK

    flagged: set[str] = set()
    for violation in rules.evaluate(recording.resources, stack, ROOT):
        if violation.rule == "public-service-auth":
            resource = recording.by_urn(violation.urn)
            flagged |= {a.name for a in recording.ancestors(resource) if not a.custom}
    unseen = []
    for name, outputs in (recording.outputs.get("services") or {}).items():
        uri = outputs.get("scoring_uri")
        if isinstance(uri, str) and urlparse(uri).hostname not in LOOPBACK and name not in flagged:
            unseen.append(name)
    return unseen


def has_resource(recording: Recording, type_: str, subset: dict[str, Any]) -> bool:
    """Whether some resource of `type_` has inputs that include `subset` (nested dicts compared by subset)."""
    return any(_includes(r.inputs, subset) for r in recording.of_type(type_))


def _includes(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _includes(actual[k], v) for k, v in expected.items())
    return actual == expected


def assert_rejected(config: dict, path: str, words: str) -> None:
    recorded: list = []
    original = offline.RecordingMonitor.RegisterResource

    def spy(self, request):  # count registrations of the failing run
        recorded.append(request.type)
        return original(self, request)

    offline.RecordingMonitor.RegisterResource = spy  # type: ignore[method-assign]
    try:
        with pytest.raises(ConfigError) as caught:
            run_config(config)
    finally:
        offline.RecordingMonitor.RegisterResource = original  # type: ignore[method-assign]
    matching = [p for p in caught.value.problems if p.startswith(f"{path}: ")]
    assert matching, f"no problem at {path}; got {caught.value.problems}"
    assert words.lower() in matching[0].lower(), matching[0]
    assert [t for t in recorded if t != "pulumi:pulumi:Stack"] == [], "resources registered despite bad config"


def git_project(repo: Path, model_file: Path) -> Path:
    """The project's tracked files in a new git repository at `repo`, committed, with the trained
    model in models/ untracked (as scripts/setup leaves it)."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "models").mkdir(exist_ok=True)
    shutil.copy(model_file, repo / "models" / model_file.name)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    return repo


def inputs_by_urn(rec) -> dict:
    return {r.urn: r.inputs for r in rec.resources}


def changed(before, after) -> set[str]:
    a, b = inputs_by_urn(before), inputs_by_urn(after)
    assert a.keys() == b.keys(), "the set of resources changed"
    return {urn.rsplit("::", 1)[1] for urn in a if a[urn] != b[urn]}


# ---- the scoring runtime as a process --------------------------------------------------------

STARTUP_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def post(self, body: bytes | str, headers: dict | None = None) -> httpx.Response:
        hdrs = {"content-type": "application/json", **(headers or {})}
        return httpx.post(self.url + "/score", content=body, headers=hdrs, timeout=30)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)


def start_process(script: Path, model_dir: Path | None, env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp_path / f"serving-{port}.log"
    args = [sys.executable, "-m", "serving", "--entry-script", str(script), "--port", str(port)]
    if model_dir is not None:
        args += ["--model-dir", str(model_dir)]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", log


def wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not ready within {STARTUP_S}s:\n{log.read_text()}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serve(script: Path, tmp_path: Path, model_dir: Path | None = None, **env: str) -> Iterator[Served]:
    proc, url, log = start_process(script, model_dir, env, tmp_path)
    try:
        wait_ready(proc, url, log)
        yield Served(proc, url, log)
    finally:
        stop_process(proc)


def write_script(tmp_path: Path, body: str, name: str = "score.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# ---- HTTPS stand-ins of cloud services -------------------------------------------------------

def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA made for this test run and a certificate for 127.0.0.1 signed by it: (CA bundle, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ml-deploy test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@contextmanager
def https_server(handler: type[BaseHTTPRequestHandler], folder: Path) -> Iterator[tuple[str, Path]]:
    """Serve `handler` over TLS on 127.0.0.1 (a thread of this process) with a certificate from a
    CA made for the run; yields `("127.0.0.1:<port>", CA bundle)`. Clients built on requests trust
    the bundle through REQUESTS_CA_BUNDLE."""
    ca, cert, key = _certificates(folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON (the fake Azure Resource Managers of the tests)."""

    def log_message(self, *_args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def fake_arm(make_handler: Callable[[list[str]], type[BaseHTTPRequestHandler]], folder: Path, monkeypatch: Any,
             bearer: str) -> Iterator[str]:
    """A fake Azure Resource Manager on 127.0.0.1 over TLS, trusted by requests, and providers/arm.py's
    tokens answered with `bearer` for it alone: yields its base URL. `make_handler(base)` gets a list
    whose one item is that URL once the server is up (for the Location headers it writes)."""
    from providers import arm as azure_arm

    base = [""]
    with https_server(make_handler(base), folder) as (address, ca):
        base[0] = f"https://{address}"
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        previous = azure_arm.use_token_source(lambda scope: bearer if scope == f"{base[0]}/.default" else "")
        try:
            yield base[0]
        finally:
            azure_arm.use_token_source(previous)


# ---- IoT Edge manifests against the official schemas ----------------------------------------

EDGE_SCHEMAS = ROOT / "schemas" / "iot-edge"


def edge_manifest_errors(manifest: dict[str, Any]) -> list[str]:
    """Every way `manifest` fails the vendored SchemaStore schemas (deployment 2.0, `$edgeAgent`
    1.1, `$edgeHub` 1.1) or the checks they miss (content.edge_manifest.problems)."""
    import jsonschema

    from content.edge_manifest import problems

    content = manifest.get("modulesContent", {})
    documents = {
        "azure-iot-edge-deployment-2.0.json": manifest,
        "azure-iot-edgeagent-deployment-1.1.json": {"$edgeAgent": content.get("$edgeAgent")},
        "azure-iot-edgehub-deployment-1.1.json": {"$edgeHub": content.get("$edgeHub")},
    }
    errors: list[str] = []
    for name, document in documents.items():
        schema = json.loads((EDGE_SCHEMAS / name).read_text())
        validator = jsonschema.validators.validator_for(schema)(schema)
        errors += [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    return errors + problems(manifest)


# ---- TLS ------------------------------------------------------------------------------------

def self_signed_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key (PEM) for 127.0.0.1, made now: (cert.pem, key.pem) in `tmp_path`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# ---- the project through the real engine -----------------------------------------------------

PROJECT_FILES = ("Pulumi.yaml", "Pulumi.local.yaml", "Pulumi.lab.yaml", "infra", "components", "content", "providers", "serving",
                 "scoring_templates", "cli", "policy")
"""What a copy of the project needs to run the program and the command line."""


def copy_project(work: Path, model_file: Path) -> Path:
    """The project copied into `work` (stack files there never touch the repository), with the
    local stack's salt dropped (it belongs to the README's passphrase) and the model in models/."""
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
        else:
            shutil.copy(src, work / name)
    stack_file = work / "Pulumi.local.yaml"
    stack_file.write_text("".join(line for line in stack_file.read_text().splitlines(keepends=True)
                                  if not line.startswith("encryptionsalt:")))
    (work / "models").mkdir()
    shutil.copy(model_file, work / "models" / model_file.name)
    return work


def engine_dir() -> str:
    """The folder of the project's Pulumi engine (scripts/pulumi-engine: built once, cached)."""
    return subprocess.run(["bash", str(ROOT / "scripts" / "pulumi-engine")], check=True,
                          capture_output=True, text=True).stdout.strip()


def engine_environ(project: Path, state: Path, passphrase: str = "test-passphrase") -> dict[str, str]:
    """The variables that run the project's Pulumi engine on `project` with a file backend in
    `state`, offline (no plugin downloads); `passphrase` opens the stack's secrets."""
    return {
        "PATH": f"{engine_dir()}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "VIRTUAL_ENV": str(ROOT / ".venv"),
        "PYTHONPATH": str(project),
        "PULUMI_HOME": str(state / "home"),
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": passphrase,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }


@contextmanager
def local_engine_stack(project: Path, state: Path) -> Iterator[Any]:
    """The `local` stack of `project` through the real engine (Automation API, a file backend in
    `state`), destroyed afterwards."""
    from pulumi import automation as auto

    env = engine_environ(project, state)
    os.environ.update(env)  # the Automation API runs `pulumi` with this process's environment
    # The engine is first on PATH; its version is checked against the SDK's (they are pinned together).
    ws = auto.LocalWorkspace(work_dir=str(project), pulumi_home=str(state / "home"), env_vars=env,
                             pulumi_command=auto.PulumiCommand())
    stack = auto.Stack.create_or_select("local", ws)
    try:
        yield stack
    finally:
        stack.destroy(on_output=lambda _: None)


def lab_environ() -> dict[str, str]:
    """The variables `scripts/lab up` wrote to its env file (PATH left out), or a skip saying what
    is not running."""
    lab = ROOT / "scripts" / "lab"
    status = subprocess.run(["bash", str(lab), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        pytest.skip("the lab is not up (run `bash scripts/lab up`):\n" + status.stdout + status.stderr)
    printed = subprocess.run(["bash", str(lab), "env"], capture_output=True, text=True)
    if printed.returncode != 0:
        pytest.skip("the lab runs but has no env file yet: " + printed.stderr.strip())
    env: dict[str, str] = {}
    for line in printed.stdout.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and not words[1].startswith("PATH="):
            key, _, value = words[1].partition("=")
            env[key] = value
    return env
