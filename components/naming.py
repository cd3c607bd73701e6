"""Physical names for Azure resources, valid for each resource kind's naming rules."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class NameRule:
    """The naming rule of one Azure resource kind."""

    min_len: int
    max_len: int
    pattern: str
    """Full-match regular expression a valid name satisfies."""
    allowed: str
    """Regex character class of the characters the kind accepts; others are dropped."""
    separator: str
    """What joins name parts; empty where the kind takes no punctuation."""
    lowercase: bool
    globally_unique: bool
    """True where the name is part of a public DNS name, so it gets a stable hash suffix."""


class Kind(Enum):
    """Azure resource kinds whose names ml-deploy derives. Rules checked against MicrosoftDocs/azure-docs
    articles/azure-resource-manager/management/resource-name-rules.md."""

    RESOURCE_GROUP = NameRule(1, 90, r"[A-Za-z0-9_().-]*[A-Za-z0-9_()-]", r"[A-Za-z0-9_().-]", "-", False, False)
    STORAGE_ACCOUNT = NameRule(3, 24, r"[a-z0-9]+", r"[a-z0-9]", "", True, True)
    KEY_VAULT = NameRule(3, 24, r"[A-Za-z](?!.*--)[A-Za-z0-9-]*[A-Za-z0-9]", r"[A-Za-z0-9-]", "-", True, True)
    CONTAINER_REGISTRY = NameRule(5, 50, r"[A-Za-z0-9]+", r"[A-Za-z0-9]", "", True, True)
    # Machine Learning workspaces: 3-33 "Alphanumerics and hyphens" (resource-name-rules.md,
    # Microsoft.MachineLearningServices); no underscore. Starting with a letter or digit as the
    # workspaces API's own pattern (^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$) requires.
    ML_WORKSPACE = NameRule(3, 33, r"[A-Za-z0-9][A-Za-z0-9-]*", r"[A-Za-z0-9-]", "-", False, False)
    LOG_ANALYTICS = NameRule(4, 63, r"[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]", r"[A-Za-z0-9-]", "-", False, False)
    APP_INSIGHTS = NameRule(1, 260, r"[^%&\\?/]*[^%&\\?/. ]", r"[^%&\\?/]", "-", False, False)
    CONTAINER_GROUP = NameRule(1, 63, r"[a-z0-9](?!.*--)[a-z0-9-]*[a-z0-9]", r"[a-z0-9-]", "-", True, False)
    DNS_LABEL = NameRule(3, 63, r"[a-z](?!.*--)[a-z0-9-]*[a-z0-9]", r"[a-z0-9-]", "-", True, True)
    USER_ASSIGNED_IDENTITY = NameRule(3, 128, r"[A-Za-z0-9][A-Za-z0-9_-]*", r"[A-Za-z0-9_-]", "-", False, False)
    BLOB_CONTAINER = NameRule(3, 63, r"[a-z0-9](?!.*--)[a-z0-9-]*[a-z0-9]", r"[a-z0-9-]", "-", True, False)
    AKS_CLUSTER = NameRule(1, 63, r"[A-Za-z0-9][A-Za-z0-9_-]*[A-Za-z0-9]", r"[A-Za-z0-9_-]", "-", False, False)
    # An AKS cluster's DNS prefix: 1-54 letters, digits and hyphens, starting and ending with a letter
    # or digit (the azurerm provider's kubernetes_cluster `dns_prefix` rule, as the portal enforces it).
    AKS_DNS_PREFIX = NameRule(1, 54, r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", r"[A-Za-z0-9-]", "-", False, False)
    KUBERNETES = NameRule(1, 63, r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", r"[a-z0-9-]", "-", True, False)
    # IoT hubs: 3-50 letters, digits and hyphens, not ending with a hyphen; part of the public host
    # name `<name>.azure-devices.net`.
    IOT_HUB = NameRule(3, 50, r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", r"[A-Za-z0-9-]", "-", True, True)
    # Azure ML online endpoints: "Begin with a letter", "Be 3-32 characters in length", "Only consist of
    # letters and numbers", single dashes accepted, unique within the region
    # (learn.microsoft.com/azure/machine-learning/how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints);
    # lowercase, as the name is the scoring URI's host.
    ONLINE_ENDPOINT = NameRule(3, 32, r"[a-z](?!.*--)[a-z0-9-]*[a-z0-9]", r"[a-z0-9-]", "-", True, True)
    # Batch endpoints: the same page's rules (its section covers online and batch endpoints).
    BATCH_ENDPOINT = NameRule(3, 32, r"[a-z](?!.*--)[a-z0-9-]*[a-z0-9]", r"[a-z0-9-]", "-", True, True)
    # An endpoint's deployments: the REST spec's `^[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}$` (mfe.json, Batch/
    # OnlineDeployments_CreateOrUpdate) within azure-ai-ml's 3-32, letter-first rule (constants/_endpoint.py
    # NAME_REGEX_PATTERN); unique within the endpoint only.
    ML_DEPLOYMENT = NameRule(3, 32, r"[a-z](?!.*--)[a-z0-9-]*[a-z0-9]", r"[a-z0-9-]", "-", True, False)
    # Azure ML compute clusters: 3-24 letters, digits and `-`, starting with a letter, unique in the region
    # (learn.microsoft.com/azure/machine-learning/how-to-create-attach-compute-cluster); no `-` here, which
    # the page wants followed later by a letter.
    ML_COMPUTE = NameRule(3, 24, r"[a-z][a-z0-9]*", r"[a-z0-9]", "", True, True)
    # Container registry scope maps and tokens: 5-50 letters, digits, hyphens and underscores.
    REGISTRY_TOKEN = NameRule(5, 50, r"[A-Za-z0-9_-]+", r"[A-Za-z0-9_-]", "-", False, False)


HASH_LEN = 6


def stable_hash(seed: str, length: int = HASH_LEN) -> str:
    """A short lowercase hex digest of `seed`; the same seed always gives the same suffix."""
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


def azure_name(kind: Kind, *parts: str, unique_seed: str | None = None) -> str:
    """Join `parts` into a name valid for `kind`.

    Characters the kind rejects are dropped, the result is cut to the kind's length, and kinds
    whose names must be globally unique get a stable hash of `unique_seed` (defaulting to the
    parts) appended, so two stacks or two subscriptions never collide but one stack always
    derives the same name.
    """
    rule = kind.value
    allowed = re.compile(rule.allowed)

    def clean(part: str) -> str:
        kept = "".join(ch for ch in part if allowed.fullmatch(ch))
        return kept.lower() if rule.lowercase else kept

    cleaned = [c for c in (clean(p) for p in parts) if c]
    if rule.separator:
        # Collapse separator runs and trim them from the ends: several kinds forbid both.
        body = rule.separator.join(c.strip(rule.separator) for c in cleaned)
        body = re.sub(re.escape(rule.separator) + "{2,}", rule.separator, body)
    else:
        body = "".join(cleaned)

    suffix = ""
    if rule.globally_unique:
        seed = unique_seed if unique_seed is not None else "/".join(parts)
        suffix = stable_hash(seed)
    room = rule.max_len - len(suffix) - (len(rule.separator) if suffix else 0)
    body = body[:room].rstrip(rule.separator or "-").rstrip(".")
    # Names that must start with a letter get one when the parts begin with a digit.
    if rule.pattern.startswith("[a-z]") or rule.pattern.startswith("[A-Za-z]"):
        if body and not body[0].isalpha():
            body = ("m" + body)[:room]
    name = f"{body}{rule.separator}{suffix}" if suffix and body else (body or suffix)
    if not is_valid(kind, name):
        raise ValueError(
            f"cannot derive a valid {kind.name.lower()} name from {parts!r}: got {name!r}; "
            f"names must be {rule.min_len}-{rule.max_len} characters matching {rule.pattern}"
        )
    return name


def is_valid(kind: Kind, name: str) -> bool:
    """Whether `name` satisfies `kind`'s naming rule."""
    rule = kind.value
    return rule.min_len <= len(name) <= rule.max_len and re.fullmatch(rule.pattern, name) is not None
