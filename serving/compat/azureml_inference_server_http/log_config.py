"""Stand-in for azureml-inference-server-http's `log_config`, which apps' logging.json files name."""

from __future__ import annotations

import logging
import time
from typing import Literal, Optional


class RootAccessFilter(logging.Filter):
    """Drops the access lines of liveness probes (`GET /`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "GET / HTTP/1.1" not in message and not message.startswith("GET / ")


class AMLLogFormatter(logging.Formatter):
    """The reference's log line (`2024-01-02 03:04:05,678 I [123] azmlinfsrv - text`), in UTC."""

    converter = time.gmtime

    def __init__(self, fmt: str = "%(asctime)s %(levelname).1s [%(process)d] %(name)s - %(message)s",
                 datefmt: Optional[str] = None, style: Literal["%", "{", "$"] = "%"):
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)
