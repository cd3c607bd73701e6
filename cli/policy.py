"""The policy pack's rules run on an offline plan: what `pulumi preview --policy-pack policy/run`
would report, shown by `./ml-deploy plan` and `./ml-deploy diff` without a cloud or an engine."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from infra.schema import PROJECT_ROOT
from policy.rules import Violation, evaluate

__all__ = ["Violation", "check", "as_dict", "line", "render_violations"]


def check(resources: Iterable[Any], stack: str, root: Path = PROJECT_ROOT) -> list[Violation]:
    """Every rule of the pack over offline-plan records (`.type`, `.urn`, `.name`, `.inputs`,
    `.protect`), each finding once, mandatory first, in a stable order."""
    found = {(v.rule, v.urn, v.message): v for v in evaluate(list(resources), stack, root)}
    return sorted(found.values(), key=lambda v: (not v.mandatory, v.rule, v.type, v.name, v.message))


def as_dict(v: Violation) -> dict[str, Any]:
    return asdict(v)


def line(v: Violation) -> str:
    """`[mandatory] rule: type  name: message`, on one line."""
    return f"[{'mandatory' if v.mandatory else 'advisory'}] {v.rule}: {v.type}  {v.name}: {' '.join(v.message.split())}"


def render_violations(violations: list[Violation]) -> list[str]:
    """Text lines for a plan's policy section."""
    if not violations:
        return ["Policy: every rule of policy/ passes."]
    mandatory = sum(v.mandatory for v in violations)
    return [f"Policy: {mandatory} mandatory, {len(violations) - mandatory} advisory violation(s):",
            *(f"  {line(v)}" for v in violations)]
