"""TLS on every target: the Azure ML SDK's `ssl_enabled`, `ssl_cert_pem_file`, `ssl_key_pem_file`,
`ssl_cname`. The runtime serves HTTPS itself; the certificate and key only travel as secrets."""

from __future__ import annotations

import json
import ssl
import sys
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest

from providers.local import ServiceProvider, process_alive
from tests.helpers import SEED, TEMPLATES, assert_rejected, self_signed_certificate

GROUP = "azure-native:containerinstance:ContainerGroup"


@pytest.fixture
def pem(tmp_path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


def _tls(cert: Path, key: Path, **extra) -> dict:
    return {"ssl_enabled": True, "ssl_cert_pem_file": str(cert), "ssl_key_pem_file": str(key), **extra}


def test_aci_serves_https_on_443_with_the_certificate_in_a_secret_volume(config, run, pem):
    config["ml-deploy:services"][0].update(_tls(*pem, ssl_cname="score.example.com"))
    rec = run(config)
    group = rec.of_type(GROUP)[0]
    container = group.inputs["containers"][0]
    env = {e["name"]: e.get("value") for e in container["environmentVariables"]}
    assert env["PORT"] == "443"
    assert env["SCORING_TLS_CERT_FILE"] == "/etc/scoring-tls/cert.pem"
    assert container["livenessProbe"]["httpGet"] == {"path": "/", "port": 443, "scheme": "https"}
    assert group.inputs["ipAddress"]["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert container["volumeMounts"] == [{"mountPath": "/etc/scoring-tls", "name": "tls", "readOnly": True}]
    assert any(p.startswith("volumes") for p in group.secret_paths), group.secret_paths
    assert "BEGIN" not in json.dumps({k: v for k, v in group.inputs.items() if k != "volumes"})
    assert rec.outputs["services"]["diabetes-aci"]["scoring_uri"] == "https://score.example.com/score"


def test_aci_without_tls_stays_on_plain_http_80(config, run):
    group = run(config).of_type(GROUP)[0]
    assert group.inputs["ipAddress"]["ports"] == [{"port": 80, "protocol": "TCP"}]
    assert "volumes" not in group.inputs


def test_aks_mounts_a_tls_secret_probes_https_and_listens_on_443(config, run, pem):
    config["ml-deploy:aks_clusters"] = [{"name": "prod"}]
    config["ml-deploy:services"].append({"name": "diabetes-aks", "image": "diabetes", "target": "aks",
                                         "cluster": "prod", **_tls(*pem)})
    rec = run(config)
    secret = next(r for r in rec.of_type("kubernetes:core/v1:Secret") if r.name == "diabetes-aks-tls")
    assert secret.inputs["type"] == "kubernetes.io/tls" and "stringData" in secret.secret_paths
    deployment = rec.by_name("kubernetes:apps/v1:Deployment", "diabetes-aks-deployment")
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "/etc/scoring-tls" in [m["mountPath"] for m in container["volumeMounts"]]
    service = rec.by_name("kubernetes:core/v1:Service", "diabetes-aks-service")
    assert service.inputs["spec"]["ports"][0]["port"] == 443
    assert rec.outputs["services"]["diabetes-aks"]["scoring_uri"].startswith("https://")
    for obj in (secret, deployment, service):
        manifest = {k: v for k, v in obj.inputs.items() if not k.startswith("__")}
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_ssl_enabled_needs_both_pem_files(config, pem):
    config["ml-deploy:services"][0].update(ssl_enabled=True, ssl_cert_pem_file=str(pem[0]))
    assert_rejected(config, "services[0].ssl_key_pem_file", "required with ssl_enabled: true")


def test_pem_files_without_ssl_enabled_are_an_error(config, pem):
    config["ml-deploy:services"][0].update(ssl_cert_pem_file=str(pem[0]), ssl_key_pem_file=str(pem[1]))
    assert_rejected(config, "services[0].ssl_cert_pem_file", "set ssl_enabled: true")


def test_a_file_that_is_not_pem_is_an_error(config, tmp_path, pem):
    bogus = tmp_path / "cert.txt"
    bogus.write_text("not a certificate")
    config["ml-deploy:services"][0].update(_tls(bogus, pem[1]))
    assert_rejected(config, "services[0].ssl_cert_pem_file", "not a PEM file")


def test_a_local_service_serves_https_with_the_certificate(tmp_path, pem, model_files):
    """The local target's provider, for real: the runtime on 127.0.0.1 over HTTPS, verified against
    the certificate (its SAN is 127.0.0.1)."""
    from content.bundle import EnvironmentFile, model_dir, scoring_bundle, write_bundle
    from content.model import BundledModel

    models = [BundledModel.from_path("diabetes-ridge", model_files[0])]
    sources = scoring_bundle(TEMPLATES / "sklearn" / "score.py", EnvironmentFile(TEMPLATES / "sklearn" / "env.yml"),
                             models, Path(__file__).resolve().parents[1] / "serving", "base")
    bundle = write_bundle(tmp_path / "bundle", sources)
    # The project's own python has what the sklearn template needs.
    props = {"service": "tls-local", "bundle": str(bundle), "python": sys.executable, "model_dir": str(model_dir(models)),
             "log_dir": str(tmp_path / "logs"), "port": 0, "workers": 1, "auth_enabled": False,
             "timeout_ms": 60000, "tls_cert_pem": pem[0].read_text(), "tls_key_pem": pem[1].read_text()}
    provider = ServiceProvider()
    created = provider.create(props)
    outs = created.outs or {}
    try:
        assert outs["scoring_uri"].startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(pem[0]))
        request = urllib.request.Request(outs["scoring_uri"], data=json.dumps(SEED).encode(),
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            assert len(json.loads(response.read())) == 2
        # The key the process reads is written for this user only, in the workspace's tls/ folder.
        key = tmp_path / "tls" / "tls-local" / "key.pem"
        assert key.read_text() == pem[1].read_text() and key.stat().st_mode & 0o777 == 0o600
    finally:
        provider.delete(created.id, outs)
    assert not process_alive(int(outs["pid"]))
    assert not (tmp_path / "tls" / "tls-local").exists()


def test_every_process_target_takes_the_certificate_as_secret_inputs(config, run, pem):
    """The local and container targets get TLS from the service's runtime as ACI and AKS do: the
    PEMs, secret, as their providers' inputs (not a path the provider reads behind the plan's back)."""
    from tests.test_container import DYNAMIC, container_config

    rec = run(container_config(config, **_tls(*pem)))
    container = rec.by_name(DYNAMIC, "diabetes-container-container")
    assert container.inputs["tls_key_pem"] == pem[1].read_text()
    assert {"tls_cert_pem", "tls_key_pem"} <= container.secret_paths


def test_the_container_gets_its_certificate_owned_by_the_images_user_and_readable_by_it_only(pem):
    import io
    import tarfile

    from components.service import TLS_DIR
    from content.bundle import SCORING_UID
    from providers.serving_process import tls_archive

    props = {"tls_cert_pem": pem[0].read_text(), "tls_key_pem": pem[1].read_text()}
    archive = tls_archive(props, TLS_DIR, SCORING_UID)
    assert archive is not None and tls_archive({}, TLS_DIR, SCORING_UID) is None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        folder = TLS_DIR.lstrip("/")
        assert set(members) == {folder, f"{folder}/cert.pem", f"{folder}/key.pem"}
        assert all(m.uid == SCORING_UID and m.gid == SCORING_UID for m in members.values())
        assert members[f"{folder}/key.pem"].mode == 0o400
        key = tar.extractfile(f"{folder}/key.pem")
        assert key is not None and key.read().decode() == pem[1].read_text()
