"""How the command line reports a failure: one line that says what and where, the traceback only
with `--debug`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Iterator

import yaml


class CliError(Exception):
    """A failure the command explains in its message (no traceback is useful)."""


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback too")


def describe(err: BaseException) -> list[str]:
    """The lines that explain `err`: one, or one per problem of an invalid stack config."""
    from infra.config import ConfigError

    if isinstance(err, ConfigError):
        return [f"invalid stack config: {p}" for p in err.problems]
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return [f"{mark.name}: line {mark.line + 1}, column {mark.column + 1}: {err.problem} (not valid YAML)"]
    if isinstance(err, (CliError, FileNotFoundError, ValueError, KeyError, OSError)):
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        return [" ".join(text.split())]
    return [f"{type(err).__name__}: {' '.join(str(err).split())}"]


@contextlib.contextmanager
def one_line(prog: str, debug: bool) -> Iterator[None]:
    """Run the body; on an exception print `prog: <what went wrong>` (per line) and exit 2."""
    try:
        yield
    except (SystemExit, GeneratorExit):
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BaseException as err:  # noqa: BLE001 - every failure becomes a line; --debug shows why
        if debug:
            import traceback

            traceback.print_exc()
        hint = " (--debug prints the traceback)" if not debug and _unexpected(err) else ""
        for line in describe(err):
            print(f"{prog}: {line}{hint}", file=sys.stderr)
        raise SystemExit(2) from None


def _unexpected(err: BaseException) -> bool:
    from infra.config import ConfigError

    return not isinstance(err, (ConfigError, CliError, FileNotFoundError, yaml.YAMLError))
