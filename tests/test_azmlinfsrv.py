"""The `azmlinfsrv` entry point: the reference's settings precedence, and a real server on 127.0.0.1.

Microsoft's own scenario suite runs against it with `scripts/azmlinfsrv-suite`; these tests pin the
behaviour that suite does not look at (precedence over the config file, our differences).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from serving import azmlinfsrv
from tests.helpers import free_port, write_script

ROOT = Path(__file__).resolve().parent.parent
EXECUTABLE = ROOT / "serving" / "bin" / "azmlinfsrv"


def merged(argv: list[str], env: dict[str, str], cwd: str = "/app") -> dict[str, str]:
    env = dict(env)
    azmlinfsrv.merge(azmlinfsrv.parse_args(argv), env, cwd)
    return env


def test_a_flag_wins_over_its_environment_variable():
    env = merged(["--entry_script", "s.py", "--model_dir", "./m", "--worker_count", "3"],
                 {"AZUREML_MODEL_DIR": "./env", "WORKER_COUNT": "2"})
    assert env["AZUREML_MODEL_DIR"] == "./m" and env["WORKER_COUNT"] == "3"
    assert env["AZUREML_ENTRY_SCRIPT"] == "/app/s.py"


def test_the_environment_wins_over_the_config_file(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"AML_CORS_ORIGINS": "file.com", "SCORING_TIMEOUT_MS": 6000,
                                  "AML_APP_INSIGHTS_ENABLED": True, "EXTRA_KEY": 1}))
    env = merged(["--config_file", str(config)], {"AML_CORS_ORIGINS": "env.com"})
    unknown = azmlinfsrv.apply_config_file(env, str(config))
    assert env["AML_CORS_ORIGINS"] == "env.com"
    assert env["SCORING_TIMEOUT_MS"] == "6000" and env["AML_APP_INSIGHTS_ENABLED"] == "true"
    assert unknown == ["EXTRA_KEY"]


def test_server_port_from_the_environment_is_ignored_as_by_the_reference():
    assert merged(["--entry_script", "s.py"], {"SERVER_PORT": "3535"})["SERVER_PORT"] == "5001"
    assert merged(["--entry_script", "s.py", "--port", "8000"], {})["SERVER_PORT"] == "8000"


def test_health_port_is_separate_only_when_asked():
    assert merged(["--entry_script", "s.py"], {})["HEALTH_PORT"] == "5001"
    separate = {"SEPERATE_HEALTH_ENDPOINT": "true", "HEALTH_PORT": "7000"}
    assert merged(["--entry_script", "s.py"], separate)["HEALTH_PORT"] == "5000"
    assert merged(["--entry_script", "s.py", "--health_port", "8346"], separate)["HEALTH_PORT"] == "8346"


def test_an_app_insights_key_that_is_not_a_uuid_turns_app_insights_off():
    env = merged(["--entry_script", "s.py", "--appinsights_instrumentation_key", "not-a-key"], {})
    lines = azmlinfsrv.validate(env)
    assert env["AML_APP_INSIGHTS_ENABLED"] == "false" and "Application Insights has been disabled." in lines


def test_run_time_limit_is_the_earlier_of_scoring_timeout_and_worker_timeout():
    env = merged(["--entry_script", "s.py"], {"WORKER_TIMEOUT": "20", "SCORING_TIMEOUT_MS": "60000"})
    assert azmlinfsrv.settings_from(env).timeout_ms == 20_000
    env = merged(["--entry_script", "s.py"], {"SCORING_TIMEOUT_MS": "1500"})
    assert azmlinfsrv.settings_from(env).timeout_ms == 1500


def test_unknown_flags_exit_1_with_the_help():
    with pytest.raises(SystemExit) as exit_:
        azmlinfsrv.parse_args(["--entry-script", "s.py"])
    assert exit_.value.code == 1


@contextmanager
def azmlinfsrv_process(tmp_path: Path, args: list[str], **env: str) -> Iterator[tuple[str, Path]]:
    """Our `azmlinfsrv` on a free port of 127.0.0.1, ready; yields its URL and its stdout's file."""
    port = free_port()
    log = tmp_path / "stdout.txt"
    proc = subprocess.Popen([sys.executable, str(EXECUTABLE), *args, "--port", str(port)], cwd=tmp_path,
                            env={**os.environ, "AZMLINFSRV_HOST": "127.0.0.1", **env}, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=40)


def test_serves_with_the_reference_header_access_line_and_print_lines(tmp_path):
    script = write_script(tmp_path, """
        def init():
            print("Initializing")

        def run(data):
            print("scored", data)
            return {"ok": True}
    """)
    with azmlinfsrv_process(tmp_path, ["--entry_script", str(script)]) as (url, log):
        answer = httpx.post(url + "/score", content=b'{"a": 1}', timeout=30)
        assert answer.status_code == 200 and answer.json() == {"ok": True}
        assert answer.headers["x-ms-server-version"] == f"azmlinfsrv/{azmlinfsrv.reference_version()}"
    out = log.read_text()
    stamp = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}"
    assert re.search(rf"{stamp} I \[\d+\] azmlinfsrv.print - Initializing\n", out)
    assert len(re.findall(r"azmlinfsrv.print - scored", out)) == 1
    assert re.search(rf"{stamp} I \[\d+\] azmlinfsrv - POST /score 200 \d+\.\d{{3}}ms \d+\n", out)
    assert "Server Port: " + url.rsplit(":", 1)[1] in out


def test_answers_liveness_on_the_separate_health_port(tmp_path):
    script = write_script(tmp_path, """
        def init():
            pass

        def run(data):
            return data
    """)
    health = free_port()
    with azmlinfsrv_process(tmp_path, ["--entry_script", str(script), "--health_port", str(health)],
                            SEPERATE_HEALTH_ENDPOINT="true") as (_, log):
        answer = httpx.get(f"http://127.0.0.1:{health}/", timeout=10)
        assert (answer.status_code, answer.text) == (200, "Healthy")
    assert f"Health Port: {health}" in log.read_text()
