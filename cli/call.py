"""`ml-deploy call`: post a JSON file to a scoring service and print the answer, as Azure ML's `service.run` does.

    ./ml-deploy call --stack local --service diabetes-local FILE   # URI and key from stack outputs
    ./ml-deploy call --uri http://127.0.0.1:5001/score [--key KEY] FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from cli import errors
from cli.engine import stack_service
from cli.errors import CliError


def call(uri: str, body: bytes, key: str | None = None, timeout_s: float = 60) -> tuple[int, bytes]:
    """POST `body` as JSON to `uri`; returns (status, response body). CliError when nothing answers."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(uri, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CliError(f"no answer from {uri}: {reason} (is the service up? `pulumi refresh` shows what "
                       "still runs, `pulumi up` starts what does not)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy call", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--stack", help="read the URI and key from this stack's outputs (needs the pulumi CLI)")
    parser.add_argument("--service", help="with --stack: the service's name")
    parser.add_argument("--uri", help="the service's scoring URI")
    parser.add_argument("--key", help="the service's key, when auth is enabled")
    parser.add_argument("file", type=Path, help="JSON file with the input, e.g. scoring_templates/sample-request.json")
    errors.add_debug_flag(parser)
    args = parser.parse_args(argv)
    if bool(args.stack) == bool(args.uri) or bool(args.stack) != bool(args.service):
        parser.error("give either --stack and --service, or --uri")
    with errors.one_line("ml-deploy call", args.debug):
        if args.stack:
            outputs = stack_service(args.stack, args.service)
            args.uri = str(outputs["scoring_uri"])
            args.key = args.key or str(outputs.get("primary_key") or "")
        body = args.file.read_bytes()
        try:
            json.loads(body)
        except json.JSONDecodeError as err:
            raise CliError(f"{args.file} is not valid JSON: {err}") from None
        status, answer = call(args.uri, body, args.key)
    print(answer.decode("utf-8", "replace"))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
