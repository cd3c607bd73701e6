"""`ml-deploy <command>`: one entry point for the commands that work beside `pulumi`.

    ./ml-deploy plan --stack dev                       # the offline plan (no cloud needed)
    ./ml-deploy diff --base main --markdown            # the offline plan diff, for a pull request
    ./ml-deploy call --stack local --service NAME FILE # service.run
    ./ml-deploy logs --stack local --service NAME      # service.get_logs()
    ./ml-deploy promote --from staging --to prod       # pin staging's images and models into prod
    ./ml-deploy traffic --stack dev --service NAME blue=0 green=100   # shift a service's traffic
    ./ml-deploy batch run --stack local --job NAME --input rows.csv --output out/   # batch scoring
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "plan": ("cli.plan", "the resource tree a stack registers, computed offline under Pulumi's mocks"),
    "diff": ("cli.diff", "what a change does to each stack: the offline plans of a git revision and the working tree, compared"),
    "call": ("cli.call", "post a JSON file to a service and print the answer (Azure ML's service.run)"),
    "logs": ("cli.logs", "print a deployed service's recent log (Azure ML's service.get_logs())"),
    "promote": ("cli.promote", "pin what one stack runs (images by digest, model versions) into another's config"),
    "traffic": ("cli.traffic", "change a service's traffic split (blue/green, canary, mirror) in its stack config"),
    "batch": ("cli.batch", "run a stack's batch scoring job over a CSV or a folder of files, on this machine"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items())
    return f"usage: ml-deploy <command> [options]\n\ncommands:\n{rows}\n\n`ml-deploy <command> --help` for its options."


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"ml-deploy: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
