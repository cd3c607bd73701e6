"""An Azure ML online endpoint's traffic split, as a resource of its own.

An endpoint's `traffic` may name only deployments that exist, and a deployment needs its endpoint
first, so the endpoint cannot be created with its split (pulumi/pulumi-azure-native#3090 tracks such
cycles; Microsoft's own examples set the split with a second `az ml online-endpoint update
--traffic`). This resource is that second step, in the graph: it depends on the deployments, so a
new deployment never gets traffic before it exists, and it is updated before a removed deployment is
deleted (whose share the config has already moved to 0). A change of split is an update of this
resource alone.

Azure ML's endpoint API changes traffic only by a full PUT of the endpoint (its PATCH takes tags
and identity alone: `PartialMinimalTrackedResourceWithIdentity` in the machinelearningservices REST
spec), so an update reads the endpoint, replaces `traffic` and `mirrorTraffic`, writes it back, and
reads it again until it reports the new split. `read` reports the split the endpoint really has, so
`pulumi refresh` shows a split changed outside the stack.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from providers.arm import ARM_ENDPOINT, Arm, ArmError, put_properties, settle

API_VERSION = "2025-12-01"
"""The Machine Learning Services API version the pinned azure-native (3.29) uses for online endpoints
("Uses Azure REST API version 2025-12-01" in its OnlineEndpoint docstring): the split's calls and the
getLogs action (infra/targets/online_endpoint.py) use it too."""
SETTLE_TIMEOUT_S = 300


def _split(body: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    props = body.get("properties") or {}
    return ({k: int(v) for k, v in (props.get("traffic") or {}).items()},
            {k: int(v) for k, v in (props.get("mirrorTraffic") or {}).items()})


def _live(traffic: dict[str, Any]) -> dict[str, int]:
    # Azure lists only deployments with a share; a 0 is the same as absent.
    return {k: int(v) for k, v in traffic.items() if int(v)}


def apply(props: dict[str, Any]) -> dict[str, Any]:
    """Write `traffic` and `mirror` onto the endpoint and wait until it reports them."""
    arm = Arm(props.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
    endpoint_id = props["endpoint_id"]
    put_properties(arm, endpoint_id, {"traffic": dict(props["traffic"]), "mirrorTraffic": dict(props["mirror"])})
    want = (_live(props["traffic"]), _live(props["mirror"]))
    body = settle(arm, endpoint_id, lambda b: tuple(map(_live, _split(b))) == want, SETTLE_TIMEOUT_S,
                  f"traffic {want[0]} and mirror {want[1]}")
    traffic, mirror = _split(body)
    return {**props, "applied_traffic": traffic, "applied_mirror": mirror}


class EndpointSettingProvider(ResourceProvider):
    """A setting written onto an Azure ML endpoint once its deployments exist (an online endpoint's split,
    a batch endpoint's default deployment): a new `endpoint_id` replaces it; its `keys`, the endpoint's
    revision (a PUT of the endpoint itself carries no such setting) or the ARM address update it."""

    suffix = "setting"
    keys: tuple[str, ...] = ()

    def apply(self, props: dict[str, Any]) -> dict[str, Any]:
        """Write the setting and wait until the endpoint reports it: the outputs."""
        raise NotImplementedError

    def observed(self, props: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The inputs as the endpoint's `body` says them, so a change made outside shows as a diff."""
        raise NotImplementedError

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['endpoint_id']}/{self.suffix}", outs=self.apply(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("endpoint_id", *self.keys, "endpoint_revision", "arm_endpoint")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=["endpoint_id"] if "endpoint_id" in changed else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.apply(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        arm = Arm(props.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
        response = arm.call("GET", props["endpoint_id"])
        if response.status_code == 404:
            return ReadResult(id_=None, outs={})  # type: ignore[arg-type] # the endpoint is gone
        if response.status_code != 200:
            raise ArmError(response)
        return ReadResult(id_=id_, outs=self.observed(props, response.json()))


class EndpointTrafficProvider(EndpointSettingProvider):
    """The split of one endpoint: `traffic` and `mirror`, deployment name -> percent."""

    suffix = "traffic"
    keys = ("traffic", "mirror")

    def apply(self, props: dict[str, Any]) -> dict[str, Any]:
        return apply(props)

    def observed(self, props: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        traffic, mirror = _split(body)
        names = set(props.get("traffic") or {}) | set(traffic)
        mirror = _live(mirror)  # a 0 share is no mirror, as the inputs write it
        return {**props, "traffic": {n: traffic.get(n, 0) for n in sorted(names)}, "mirror": mirror,
                "applied_traffic": traffic, "applied_mirror": mirror}

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # The endpoint stays (it is deleted, if at all, as its own resource): it stops routing first,
        # so its deployments can be deleted after this without a request sent to one that is going.
        arm = Arm(props.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
        if arm.call("GET", props["endpoint_id"]).status_code == 404:
            return
        apply({**props, "traffic": {}, "mirror": {}})


class EndpointTraffic(Resource, module="machinelearningservices", name="EndpointTraffic"):
    """An online endpoint's live and mirrored traffic, applied after its deployments exist."""

    applied_traffic: pulumi.Output[dict[str, int]]
    applied_mirror: pulumi.Output[dict[str, int]]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(EndpointTrafficProvider(), name,
                         {**props, "applied_traffic": None, "applied_mirror": None}, opts)
