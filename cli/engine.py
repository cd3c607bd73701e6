"""Find the Pulumi engine this project builds, and the environment it runs in, from any terminal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from cli.errors import CliError
from infra.schema import PROJECT_ROOT

ENV_SCRIPT = PROJECT_ROOT / "scripts" / "pulumi-env"


class EngineMissing(CliError):
    """No Pulumi CLI on PATH and none built by scripts/pulumi-engine."""


def _engine_dir() -> Path | None:
    # The same cache path scripts/pulumi-engine prints; asked of the script itself only when the CLI
    # is there, since asking it otherwise starts a three-minute build.
    version = re.search(r"^pulumi==([0-9.]+)$", (PROJECT_ROOT / "requirements.txt").read_text(), re.M)
    cache = Path(os.environ.get("ML_DEPLOY_CACHE", Path.home() / ".cache" / "ml-deploy")) / "pulumi"
    if version is None or not cache.is_dir():
        return None
    found = sorted(cache.glob(f"v{version.group(1)}-host*/pulumi"))
    return found[-1].parent if found else None


def pulumi_environ() -> dict[str, str]:
    """The environment `source scripts/pulumi-env` sets up (engine on PATH, local state backend),
    or the current one when a `pulumi` CLI is already on PATH and configured."""
    if os.environ.get("PULUMI_BACKEND_URL") and shutil.which("pulumi"):
        return dict(os.environ)
    if _engine_dir() is None:
        raise EngineMissing(
            "no Pulumi engine found; build it once with `bash scripts/pulumi-engine` (about 3 minutes)"
        )
    dump = subprocess.run(
        ["bash", "-c", f'source "{ENV_SCRIPT}" >/dev/null && env -0'],
        capture_output=True, check=True, cwd=PROJECT_ROOT,
    ).stdout
    return dict(item.split("=", 1) for item in dump.decode().split("\0") if "=" in item)


def stack_outputs(stack: str, name: str) -> object:
    """One stack output (secrets shown), read with the Pulumi CLI."""
    import json

    result = subprocess.run(
        ["pulumi", "stack", "output", name, "--json", "--show-secrets", "--stack", stack],
        capture_output=True, text=True, env=pulumi_environ(), cwd=PROJECT_ROOT,
    )
    if result.returncode != 0:
        why = next((line for line in result.stderr.splitlines() if line.strip()), "no output")
        raise CliError(f"cannot read the outputs of stack {stack!r}: {why.strip()}")
    return json.loads(result.stdout or "null")


def stack_service(stack: str, service: str) -> dict[str, object]:
    """The `services.<service>` output of `stack`."""
    services = stack_outputs(stack, "services") or {}
    assert isinstance(services, dict)
    if service not in services:
        raise CliError(
            f"stack {stack!r} has no service {service!r}; it has: {', '.join(services) or 'none'}"
        )
    return services[service]
