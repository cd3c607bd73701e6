"""Azure built-in role definitions that ml-deploy grants to managed identities."""

import pulumi

# Built-in role GUIDs are the same in every Azure tenant. Checked against Microsoft's built-in roles
# reference (MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/containers.md).
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
# The same reference, built-in-roles/storage.md.
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"


def role_definition_id(subscription_id: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    """The full resource id of a built-in role definition in `subscription_id`."""
    return pulumi.Output.concat(
        "/subscriptions/", subscription_id, "/providers/Microsoft.Authorization/roleDefinitions/", role
    )
