"""An IoT hub for IoT Edge devices, with one shared access policy for the stack's data-plane calls."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import iothub

from components import TOKEN_PREFIX

POLICY = "ml-deploy"
"""The shared access policy the stack's dynamic resources sign their IoT Hub calls with."""
# Microsoft's permission table (learn.microsoft.com/azure/iot-hub/authenticate-authorize-sas) gives
# RegistryRead/RegistryWrite the identity registry and ServiceConnect the service-facing endpoints
# (twins, direct methods); it does not say which of them IoT Hub checks for configurations and
# applyConfigurationContent, so the policy holds all three service-side rights. DeviceConnect stays
# out: devices authenticate with their own keys.
POLICY_RIGHTS = iothub.AccessRights.REGISTRY_READ_REGISTRY_WRITE_SERVICE_CONNECT


@dataclass(frozen=True)
class IotHubArgs:
    """Inputs of an IotHub."""

    hub_name: str
    """The hub's name, part of its host name `<name>.azure-devices.net`."""
    resource_group_name: pulumi.Input[str]
    sku: str
    """`F1` or `S1`-`S3`: the standard tiers (the basic ones cannot run IoT Edge)."""
    capacity: int
    """Units of the SKU."""
    location: pulumi.Input[str] | None = None
    protect: bool = True
    """Protect the hub: deleting it deletes every device identity in it."""
    tags: dict[str, str] = field(default_factory=dict)


class IotHub(pulumi.ComponentResource):
    """An IoT hub whose only shared access policy is the stack's (RegistryRead, RegistryWrite,
    ServiceConnect); its key reaches the program only as a secret."""

    hub_name: pulumi.Output[str]
    host_name: pulumi.Output[str]
    """`<name>.azure-devices.net`: the HostName of every connection string."""
    connection_string: pulumi.Output[str]
    """The policy's connection string (secret), for the stack's dynamic resources."""

    def __init__(self, name: str, args: IotHubArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:IotHub", name, None, opts)
        hub = iothub.IotHubResource(
            f"{name}-hub",
            resource_name_=args.hub_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=iothub.IotHubSkuInfoArgs(name=args.sku, capacity=args.capacity),
            properties=iothub.IotHubPropertiesArgs(
                # The policy list replaces the hub's default policies (iothubowner, service, device,
                # registryRead, registryReadWrite): the stack's calls need one, people use Entra ID.
                authorization_policies=[
                    iothub.SharedAccessSignatureAuthorizationRuleArgs(key_name=POLICY, rights=POLICY_RIGHTS)
                ],
                # Local (SAS) auth stays on: the dynamic resources sign with the policy's key, and
                # edge devices authenticate with their own symmetric keys.
                disable_local_auth=False,
                disable_device_sas=False,
                min_tls_version="1.2",
            ),
            tags=args.tags or None,
            # Deleting a hub deletes every device identity and deployment in it; provisioned
            # devices would have to be provisioned again.
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        keys = iothub.list_iot_hub_resource_keys_for_key_name_output(
            key_name=POLICY,
            resource_group_name=args.resource_group_name,
            resource_name=hub.name,
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        self.hub_name = hub.name
        self.host_name = hub.properties.apply(lambda p: p.host_name or "")
        self.connection_string = pulumi.Output.secret(pulumi.Output.concat(
            "HostName=", self.host_name, ";SharedAccessKeyName=", POLICY, ";SharedAccessKey=", keys.primary_key
        ))
        self.register_outputs({"hub_name": self.hub_name, "host_name": self.host_name})
