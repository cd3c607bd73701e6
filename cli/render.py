"""How the offline plan and the plan diff show a resource's inputs: every value in full, only the
secret ones hidden, numbers as the program wrote them, the same bytes for the same input."""

from __future__ import annotations

import difflib
import json
from typing import Any, Iterable, Iterator

SECRET = "[secret]"
ABSENT = "(absent)"
INTERNAL = frozenset({"__provider", "__defaults"})
"""Inputs the SDK adds for itself (a dynamic provider's pickled code, the defaults list)."""


def child(path: str, key: Any) -> str:
    """The property path of `key` under `path` (`a.b`, `a[0]`)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def is_secret(path: str, secret_paths: Iterable[str]) -> bool:
    """Whether `path` is a secret value or lies inside one."""
    return any(path == s or path.startswith(s + ".") or path.startswith(s + "[") for s in secret_paths)


def hide(value: Any, secret_paths: Iterable[str], path: str = "") -> Any:
    """`value` with each secret replaced by `[secret]` (and nothing else)."""
    secrets = set(secret_paths)
    if not secrets:
        return value
    if path in secrets:
        return SECRET
    if isinstance(value, dict):
        return {k: hide(v, secrets, child(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [hide(v, secrets, child(path, i)) for i, v in enumerate(value)]
    return value


def scalar(value: Any) -> str:
    """One value as JSON text on one line (integral numbers as integers)."""
    return json.dumps(_integral(value), sort_keys=True, ensure_ascii=False)


def number(value: float) -> int | float:
    """A number as the program wrote it: the wire carries every number as a double, and an
    integral one was an int."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _integral(value: Any) -> Any:
    # Recordings are already integral (cli/offline.py); a base revision's older recorder's are not.
    if isinstance(value, float):
        return number(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar under `value` with its path, keys sorted; an empty dict or list is one leaf."""
    if isinstance(value, dict) and value:
        for key in sorted(value, key=str):
            if not path and key in INTERNAL:
                continue
            yield from leaves(value[key], child(path, key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from leaves(item, child(path, i))
    else:
        yield path, value


def changed_leaves(old: Any, new: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, old, new) for every scalar that differs, absent as None, keys sorted. A dict or list
    on one side only is walked down to its scalars, so no value is ever shown cut."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if not path and key in INTERNAL:
                continue
            yield from changed_leaves(old.get(key), new.get(key), child(path, key))
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            yield from changed_leaves(old[i] if i < len(old) else None, new[i] if i < len(new) else None,
                                      child(path, i))
    elif old == new:
        return
    elif isinstance(new, (dict, list)) and new and old is None:
        for p, v in leaves(new, path):
            yield p, None, v
    elif isinstance(old, (dict, list)) and old and new is None:
        for p, v in leaves(old, path):
            yield p, v, None
    else:
        yield path, old, new


def shown(value: Any) -> str:
    """A scalar as a reviewer reads it: `(absent)` for None, JSON text otherwise."""
    return ABSENT if value is None else scalar(value)


def text_diff(old: Any, new: Any) -> list[str]:
    """The changed lines of two multi-line strings (unified, no context), else []: a changed
    script or manifest reads as its lines, not as two long strings."""
    if not (isinstance(old, str) and isinstance(new, str) and ("\n" in old or "\n" in new)):
        return []
    return [line.rstrip("\n") for line in difflib.unified_diff(old.splitlines(), new.splitlines(), "old", "new",
                                                                n=1, lineterm="")][2:]
