"""Shared fixtures: trained models, stack configs, and the program run under the mocks."""

from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from cli.offline import Recording
from scoring_templates.train_diabetes import train
from tests.helpers import ACCOUNT, ACCOUNT_KEY, AZURITE, dev_config, free_port, run_config


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The diabetes ridge model as (pickle, onnx), trained once per test session."""
    return train(tmp_path_factory.mktemp("models"))


@pytest.fixture
def config(model_files: tuple[Path, Path]) -> dict[str, Any]:
    """A fresh, mutable copy of the dev config (object values as Python objects)."""
    return copy.deepcopy(dev_config(model_files[0]))


@pytest.fixture
def run() -> Callable[..., Recording]:
    return run_config




@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Azurite blob service, one for the session (model data collection, batch endpoint runs);
    yields its connection string."""
    assert AZURITE.exists(), "run scripts/setup first: it installs Azurite"
    port = free_port()
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
         "--skipApiVersionCheck", "--loose", "--silent"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    conn = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")
    try:
        deadline = time.monotonic() + 60
        service = BlobServiceClient.from_connection_string(conn)
        while True:
            try:
                service.create_container("modeldata")
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield conn
    finally:
        # Azurite's graceful close waits on idle keep-alive connections; it holds nothing to keep.
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
