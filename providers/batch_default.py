"""An Azure ML batch endpoint's default deployment, as a resource of its own.

A batch endpoint's `defaults.deploymentName` names a deployment, while a deployment needs its
endpoint first: the same cycle as an online endpoint's traffic (providers/endpoint_traffic.py), and
the same answer. Microsoft's REST example sets the default with a second PUT of the endpoint once the
deployment exists (Azure/azureml-examples cli/batch-score-rest.sh, `set_endpoint_defaults`). This
resource is that PUT, in the graph after the deployment: a job invoked without naming a deployment
(`az ml batch-endpoint invoke`) runs this stack's, and `ml-deploy batch run` names it anyway.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from providers.arm import ARM_ENDPOINT, Arm, ArmError, put_properties, settle
from providers.endpoint_traffic import API_VERSION, SETTLE_TIMEOUT_S


def _default(body: dict[str, Any]) -> Optional[str]:
    return ((body.get("properties") or {}).get("defaults") or {}).get("deploymentName")


def apply(props: dict[str, Any]) -> dict[str, Any]:
    """Name the endpoint's default deployment and wait until the endpoint reports it."""
    arm = Arm(props.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
    want = props["deployment"]
    put_properties(arm, props["endpoint_id"], {"defaults": {"deploymentName": want}})
    settle(arm, props["endpoint_id"], lambda body: _default(body) == want, SETTLE_TIMEOUT_S,
           f"default deployment {want!r}")
    return dict(props)


class BatchDefaultProvider(ResourceProvider):
    """`endpoint_id`'s default deployment: `deployment`."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['endpoint_id']}/defaults", outs=apply(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("endpoint_id", "deployment", "endpoint_revision", "arm_endpoint")
                   if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=["endpoint_id"] if "endpoint_id" in changed else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=apply(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        arm = Arm(props.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
        response = arm.call("GET", props["endpoint_id"])
        if response.status_code == 404:
            return ReadResult(id_=None, outs={})  # type: ignore[arg-type] # the endpoint is gone
        if response.status_code != 200:
            raise ArmError(response)
        # A default changed outside the stack shows as a diff.
        return ReadResult(id_=id_, outs={**props, "deployment": _default(response.json())})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # Nothing to undo: the endpoint names its default until another is set or the endpoint goes.
        return None


class BatchEndpointDefault(Resource, module="machinelearningservices", name="BatchEndpointDefault"):
    """A batch endpoint's default deployment, set once that deployment exists."""

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(BatchDefaultProvider(), name, props, opts)
