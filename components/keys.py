"""The auth keys of a scoring service."""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_random as random


def service_keys(
    name: str,
    parent: pulumi.Resource,
    primary: Optional[pulumi.Input[str]] = None,
    secondary: Optional[pulumi.Input[str]] = None,
) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """(primary, secondary) keys, both secret: the given ones, or generated once and kept in state.

    Two keys let clients rotate: move them to the secondary, then replace the primary.
    """
    keys: list[pulumi.Output[str]] = []
    for which, given in (("primary", primary), ("secondary", secondary)):
        # `is None`, not `or`: an Output's truthiness says nothing about its value.
        key = given if given is not None else random.RandomPassword(
            f"{name}-{which}-key", length=32, special=False, opts=pulumi.ResourceOptions(parent=parent)
        ).result
        keys.append(pulumi.Output.secret(key))
    return keys[0], keys[1]
