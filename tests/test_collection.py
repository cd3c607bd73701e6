"""Model data collection over real HTTP into Azure Storage's emulator (Azurite) on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from tests.helpers import ACCOUNT, ACCOUNT_KEY, SEED, TEMPLATES, free_port, serve

def collected(conn: str, prefix: str) -> list[dict]:
    container = BlobServiceClient.from_connection_string(conn).get_container_client("modeldata")
    records = []
    for blob in container.list_blobs(name_starts_with=prefix + "/"):
        data = container.download_blob(blob.name).readall().decode()
        records += [json.loads(line) for line in data.splitlines() if line]
    return records


def test_inputs_and_predictions_are_appended_to_blobs(azurite, tmp_path: Path, model_files):
    with serve(TEMPLATES / "sklearn" / "score.py", tmp_path, model_dir=model_files[0].parent,
               MODEL_DATA_COLLECTION_CONNECTION_STRING=azurite, MODEL_DATA_COLLECTION_PREFIX="diabetes-aks",
               MODEL_DATA_COLLECTION_FLUSH_SECONDS="0.2") as s:
        body = httpx.Request("POST", "/", json=SEED).content
        answers = [s.post(body, {"x-request-id": f"req-{i}"}) for i in range(3)]
        assert all(a.status_code == 200 for a in answers)
        assert s.post(b"{bad").status_code == 400  # not scored, not collected
        deadline = time.monotonic() + 30
        while len(records := collected(azurite, "diabetes-aks")) < 3:
            assert time.monotonic() < deadline, f"collected {len(records)} of 3"
            time.sleep(0.1)
    assert sorted(r["request_id"] for r in records) == ["req-0", "req-1", "req-2"]
    assert json.loads(records[0]["input"]) == SEED
    assert json.loads(records[0]["prediction"]) == answers[0].json()


def test_storage_down_never_fails_scoring(tmp_path: Path, model_files):
    dead = f"http://127.0.0.1:{free_port()}/{ACCOUNT}"
    conn = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={dead};"
    with serve(TEMPLATES / "sklearn" / "score.py", tmp_path, model_dir=model_files[0].parent,
               MODEL_DATA_COLLECTION_CONNECTION_STRING=conn, MODEL_DATA_COLLECTION_FLUSH_SECONDS="0.2") as s:
        body = httpx.Request("POST", "/", json=SEED).content
        assert [s.post(body).status_code for _ in range(3)] == [200, 200, 200]
