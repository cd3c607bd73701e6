"""Model data collection: every scored input and its prediction, appended to blobs in the workspace storage.

Records are buffered in memory and written by a background thread, so scoring never waits on
storage; a failed write is logged and its records dropped rather than failing requests.
Blobs: `<prefix>/<yyyy>/<mm>/<dd>/<hh>/<host>-<pid>.jsonl` (append blobs, one JSON record a line).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from serving import settings as names

log = logging.getLogger("serving.collector")
# The storage SDK logs every request at INFO; the service log is for the service.
logging.getLogger("azure").setLevel(logging.WARNING)
MAX_BLOCK_BYTES = 4 * 1024 * 1024  # an append block's limit


@dataclass(frozen=True)
class CollectorSettings:
    """Where collected data goes; from the environment."""

    container: str
    prefix: str
    account_url: Optional[str] = None
    connection_string: Optional[str] = None
    flush_seconds: float = 5.0


def settings_from_environ(env: Optional[dict[str, str]] = None) -> Optional[CollectorSettings]:
    """Collector settings, or None when collection is off (no account URL or connection string)."""
    env = dict(os.environ if env is None else env)
    url = env.get(names.COLLECT_ACCOUNT_URL) or None
    conn = env.get(names.COLLECT_CONNECTION_STRING) or None
    if not url and not conn:
        return None
    return CollectorSettings(
        container=env.get(names.COLLECT_CONTAINER) or "modeldata",
        prefix=(env.get(names.COLLECT_PREFIX) or "service").strip("/"),
        account_url=url,
        connection_string=conn,
        flush_seconds=float(env.get(names.COLLECT_FLUSH_SECONDS) or 5.0),
    )


class Collector:
    """Buffers (input, prediction) records and appends them to blob storage in the background."""

    def __init__(self, settings: CollectorSettings):
        from azure.storage.blob import BlobServiceClient, LinearRetry

        self.settings = settings
        # Storage's default retry backs off from 15 s; a storage outage must not hold a flush (or
        # the shutdown, which flushes last) that long, so: two quick retries and short timeouts.
        retry = LinearRetry(backoff=1, retry_total=2, random_jitter_range=1)
        if settings.connection_string:
            service = BlobServiceClient.from_connection_string(
                settings.connection_string, retry_policy=retry, connection_timeout=5, read_timeout=15
            )
        else:
            from azure.identity import DefaultAzureCredential

            # On AKS this is the pod's workload identity, granted Storage Blob Data Contributor.
            service = BlobServiceClient(
                str(settings.account_url), credential=DefaultAzureCredential(),
                retry_policy=retry, connection_timeout=5, read_timeout=15,
            )
        self.container = service.get_container_client(settings.container)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self._records: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._created: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="model-data-collector", daemon=True)
        self._thread.start()

    def record(self, request_id: str, inputs: bytes, prediction: bytes) -> None:
        """Queue one scored request; cheap, never blocks on storage."""
        line = json.dumps({
            "time": datetime.now(timezone.utc).isoformat(),
            "request_id": request_id,
            "input": inputs.decode("utf-8", "replace"),
            "prediction": prediction.decode("utf-8", "replace"),
        }).encode() + b"\n"
        with self._lock:
            self._records.append(line)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Append what is buffered; on failure log and drop it."""
        with self._lock:
            records, self._records = self._records, []
        if not records:
            return
        blob_name = f"{self.settings.prefix}/{time.strftime('%Y/%m/%d/%H', time.gmtime())}/{self.worker_id}.jsonl"
        try:
            blob = self.container.get_blob_client(blob_name)
            if blob_name not in self._created:
                if not blob.exists():
                    blob.create_append_blob()
                self._created.add(blob_name)
            for chunk in _chunks(records):
                blob.append_block(chunk)
        except Exception as err:  # noqa: BLE001 - collection must never take scoring down
            log.error("model data collection dropped %d record(s): %r", len(records), err)

    def close(self) -> None:
        """Stop the background thread and write what is left."""
        self._stop.set()
        self._thread.join(timeout=self.settings.flush_seconds + 5)
        self.flush()


def _chunks(records: list[bytes]) -> list[bytes]:
    chunks: list[bytes] = []
    current = b""
    for line in records:
        if current and len(current) + len(line) > MAX_BLOCK_BYTES:
            chunks.append(current)
            current = b""
        current += line
    if current:
        chunks.append(current)
    return chunks


def from_environ() -> Optional[Collector]:
    """A running collector when the environment asks for collection, else None."""
    settings = settings_from_environ()
    return Collector(settings) if settings else None

