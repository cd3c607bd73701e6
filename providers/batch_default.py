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
from pulumi.dynamic import Resource

from providers.arm import ARM_ENDPOINT, Arm, put_properties, settle
from providers.endpoint_traffic import API_VERSION, SETTLE_TIMEOUT_S, EndpointSettingProvider


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


class BatchDefaultProvider(EndpointSettingProvider):
    """`endpoint_id`'s default deployment: `deployment`."""

    suffix = "defaults"
    keys = ("deployment",)

    def apply(self, props: dict[str, Any]) -> dict[str, Any]:
        return apply(props)

    def observed(self, props: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        return {**props, "deployment": _default(body)}

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # Nothing to undo: the endpoint names its default until another is set or the endpoint goes.
        return None


class BatchEndpointDefault(Resource, module="machinelearningservices", name="BatchEndpointDefault"):
    """A batch endpoint's default deployment, set once that deployment exists."""

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(BatchDefaultProvider(), name, props, opts)
