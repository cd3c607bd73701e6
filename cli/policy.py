"""The policy pack's rules run on an offline plan: what `pulumi preview --policy-pack policy/run`
would report, shown by `./ml-deploy plan` and `./ml-deploy diff` without a cloud or an engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Optional, cast

from infra.config import PROJECT_ROOT


@dataclass(frozen=True)
class Violation:
    """One rule broken by one resource."""

    rule: str
    mandatory: bool
    urn: str
    type: str
    name: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "mandatory": self.mandatory, "urn": self.urn, "type": self.type,
                "name": self.name, "message": self.message}

    def line(self) -> str:
        level = "mandatory" if self.mandatory else "advisory"
        return f"[{level}] {self.rule}: {self.type}  {self.name}: {self.message}"


def check(resources: Iterable[Any], stack: str, root: Path = PROJECT_ROOT) -> list[Violation]:
    """Every rule of the policy pack over `resources` (offline-plan records: `.type`, `.urn`,
    `.name`, `.inputs`, `.protect`), as the pack's analyzer would call it on `pulumi preview`; sorted."""
    from policy.rules import promoted_stacks_from_files, rules

    found: set[Violation] = set()
    pack = rules(promoted_stacks_from_files(root))
    for r in resources:
        args = SimpleNamespace(resource_type=r.type, props=r.inputs, urn=r.urn, name=r.name,
                               opts=SimpleNamespace(protect=bool(r.protect)))
        for rule in pack:
            def report(message: str = "", urn: Optional[str] = None, *, _rule: Any = rule, _r: Any = r) -> None:
                found.add(Violation(_rule.id, _rule.mandatory, _r.urn, _r.type, _r.name, " ".join(message.split())))

            rule.validate(cast(Any, args), report)
    return sorted(found, key=lambda v: (not v.mandatory, v.rule, v.type, v.name, v.message))


def render_violations(violations: list[Violation]) -> list[str]:
    """Text lines for a plan's policy section."""
    if not violations:
        return ["Policy: every rule of policy/ passes."]
    mandatory = sum(v.mandatory for v in violations)
    return [f"Policy: {mandatory} mandatory, {len(violations) - mandatory} advisory violation(s):",
            *(f"  {v.line()}" for v in violations)]
