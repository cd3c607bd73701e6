"""What a resource makes reachable, as the public-service rules read it: the vocabulary in which each
target (infra/targets/) declares its public endpoints for the policy pack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HTTPS_PORT = 443


@dataclass(frozen=True)
class Exposure:
    """One endpoint a resource opens to more than its own host, and what is wrong with it, if anything."""

    unauthenticated: Optional[str] = None
    """Why it answers without a key (the `public-service-auth` finding); None: it checks one."""
    plaintext: Optional[str] = None
    """Why it serves plain HTTP (the `public-service-tls` findings); None: TLS, or not public."""


EndpointReader = Callable[[Mapping[str, Any]], Iterable[Exposure]]
"""A resource's inputs -> the endpoints it opens (none: it opens nothing outside its host)."""


def env_names(containers: Iterable[Mapping[str, Any]], key: str) -> set[str]:
    """The names of the environment variables that `containers` (their `key` lists) set."""
    return {str(e.get("name")) for c in containers for e in (c.get(key) or []) if isinstance(e, Mapping)}
