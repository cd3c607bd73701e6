"""What the providers that start the scoring runtime on this machine share (the local target's
processes, the container target's containers): ports on 127.0.0.1, the keys a service keeps across
restarts, its TLS files, its readiness, and the runtime settings they are all told as
(components/runtime.py's `process_inputs`, read back)."""

from __future__ import annotations

import io
import os
import secrets
import socket
import ssl
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from components.service import TLS_CERT_NAME, TLS_KEY_NAME
from serving import settings as runtime

RUNTIME_INPUTS = ("workers", "timeout_ms", "auth_enabled", "tls_cert_pem", "tls_key_pem")
"""The provider inputs `process_inputs` writes: a change of any restarts the service."""

# Our own child on loopback: its certificate names the service's public name, not 127.0.0.1.
UNVERIFIED = ssl.create_default_context()
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def keys(auth_enabled: bool, olds: Optional[dict[str, Any]] = None) -> tuple[str, str]:
    """(primary, secondary): kept across restarts so clients keep working; made when auth turns on."""
    if not auth_enabled:
        return "", ""
    olds = olds or {}
    return (olds.get("primary_key") or secrets.token_urlsafe(32), olds.get("secondary_key") or secrets.token_urlsafe(32))


def has_tls(props: dict[str, Any]) -> bool:
    return bool(props.get("tls_cert_pem") and props.get("tls_key_pem"))


def scheme(props: dict[str, Any]) -> str:
    return "https" if has_tls(props) else "http"


def write_tls(folder: Path, props: dict[str, Any]) -> Optional[tuple[str, str]]:
    """The certificate and key written to `folder` (readable by this user only), as (cert, key)
    paths; None without TLS."""
    if not has_tls(props):
        return None
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = []
    for name, text in ((TLS_CERT_NAME, props["tls_cert_pem"]), (TLS_KEY_NAME, props["tls_key_pem"])):
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        paths.append(str(path))
    return paths[0], paths[1]


def tls_archive(props: dict[str, Any], folder: str, uid: int) -> Optional[bytes]:
    """The certificate and key as a tar of `folder` owned by `uid`, readable by it only: what
    `docker cp -` puts into a container before it starts (it works with a remote engine too)."""
    if not has_tls(props):
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(str(PurePosixPath(folder).relative_to("/")))
        directory.type, directory.mode, directory.uid, directory.gid = tarfile.DIRTYPE, 0o500, uid, uid
        tar.addfile(directory)
        for name, text in ((TLS_CERT_NAME, props["tls_cert_pem"]), (TLS_KEY_NAME, props["tls_key_pem"])):
            data = text.encode()
            info = tarfile.TarInfo(f"{directory.name}/{name}")
            info.size, info.mode, info.uid, info.gid = len(data), 0o400, uid, uid
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def settings(props: dict[str, Any], port: int, accepted: tuple[str, ...],
             tls_files: Optional[tuple[str, str]] = None, **more: Any) -> runtime.Settings:
    """The runtime settings of a service started from its provider inputs: on `port`, accepting the
    non-empty `accepted` keys, with its certificate at `tls_files` when it has TLS."""
    return runtime.Settings(
        port=port, workers=int(props["workers"]), timeout_ms=int(props["timeout_ms"]),
        auth_keys=tuple(k for k in accepted if k), service_name=str(props["service"]),
        tls_cert_file=tls_files[0] if tls_files else None, tls_key_file=tls_files[1] if tls_files else None,
        **more,
    )


def answers_ready(scheme_: str, port: int) -> bool:
    """Whether the runtime on 127.0.0.1:`port` answers `/ready` with 200 now."""
    try:
        with urllib.request.urlopen(f"{scheme_}://127.0.0.1:{port}{runtime.READINESS_PATH}", timeout=1,
                                    context=UNVERIFIED if scheme_ == "https" else None) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_port_free(port: int, timeout_s: float) -> bool:
    """Wait until nothing listens on `port` any more; whether it is free."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not port_free(port):
        time.sleep(0.05)
    return port_free(port)


def uris(props: dict[str, Any], port: int) -> dict[str, str]:
    base = f"{scheme(props)}://127.0.0.1:{port}"
    return {"scoring_uri": base + runtime.SCORE_PATH, "swagger_uri": base + runtime.SWAGGER_PATH}
