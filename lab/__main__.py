"""`python3 -m lab up|stop|status|env|pki|client-config|rss`: the lab's processes (scripts/lab runs
the builds, then this). Each step prints one line with its time, as scripts/lab's build steps do."""

from __future__ import annotations

import sys
import time

from lab import pki
from lab.services import SERVICES, Lab
from lab.supervisor import all_running, rss_mib, start, status, stop, write_client_config


def _step(name: str, action) -> None:
    t0 = time.monotonic()
    print(f"lab: {name:<40}", end="", file=sys.stderr, flush=True)
    try:
        what = action()
    except Exception as err:  # one line per failure (a LabError carries the log's tail)
        print(f" FAILED after {time.monotonic() - t0:.1f}s", file=sys.stderr)
        print(f"lab: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f" {time.monotonic() - t0:7.1f}s  {what}", file=sys.stderr)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    lab = Lab.from_environ()
    if command == "pki":
        _step("certificates and tokens", lambda: pki.make(lab))
    elif command == "up":
        for service in SERVICES:
            _step(f"start {service.name}", lambda service=service: start(lab, service))
        _step("every service still running", lambda: all_running(lab))
    elif command == "client-config":
        _step("kubeconfig and env file", lambda: write_client_config(lab))
    elif command == "stop":
        left: list[str] = []
        for service in reversed(SERVICES):
            what, problems = stop(lab, service)
            left += problems
            print(f"lab: {service.name}: {what}", file=sys.stderr)
        for problem in left:
            print(f"lab: {problem}", file=sys.stderr)
        return 1 if left else 0
    elif command == "status":
        table, everything = status(lab)
        print(table)
        return 0 if everything else 1
    elif command == "rss":
        print(f"{rss_mib(lab):.0f}")
    else:
        print("usage: python3 -m lab up|stop|status|pki|client-config|rss", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
