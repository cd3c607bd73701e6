"""The Azure ML workspace and the resources it is tied to."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import (
    applicationinsights,
    authorization,
    containerregistry,
    keyvault,
    machinelearningservices,
    operationalinsights,
    resources,
    storage,
)

from components import TOKEN_PREFIX
from components.naming import Kind, azure_name

MODELS_CONTAINER = "models"
"""Blob container, in the workspace storage, that holds registered model files."""
MODEL_DATA_CONTAINER = "modeldata"
"""Blob container, in the workspace storage, that receives collected inputs and predictions."""


@dataclass(frozen=True)
class WorkspaceArgs:
    """Inputs of a Workspace."""

    base_name: str
    """Base of every physical name (the config's `workspace.name`)."""
    stack: str
    """Stack name: part of every physical name so that stacks never collide."""
    protect: bool = True
    """Protect stateful resources (storage, Key Vault, registry, logs, workspace) from deletion."""
    sku: str = "Basic"


class Workspace(pulumi.ComponentResource):
    """An Azure ML workspace with its storage, Key Vault, Application Insights and container registry."""

    resource_group_name: pulumi.Output[str]
    """The resource group holding everything this program creates for the stack."""
    workspace_name: pulumi.Output[str]
    """The Azure ML workspace's name."""
    workspace_id: pulumi.Output[str]
    """The Azure ML workspace's resource id (the parent of its computes, jobs and datastores)."""
    storage_account_name: pulumi.Output[str]
    """The workspace storage account, which also holds registered model files."""
    blob_endpoint: pulumi.Output[str]
    """The storage account's primary blob endpoint (`https://<account>.blob.core.windows.net/`)."""
    models_container_name: pulumi.Output[str]
    """The blob container holding registered model files."""
    model_data_container_name: pulumi.Output[str]
    """The blob container receiving model data collected by services."""
    storage_account_id: pulumi.Output[str]
    """The storage account's resource id (scope for data-plane role assignments)."""
    registry_id: pulumi.Output[str]
    """The container registry's resource id (scope for AcrPull grants)."""
    registry_name: pulumi.Output[str]
    """The container registry's name (parent of its scope maps and tokens)."""
    registry_login_server: pulumi.Output[str]
    """The registry's login server (`<name>.azurecr.io`), the prefix of every image reference."""
    app_insights_connection_string: pulumi.Output[str]
    """Application Insights connection string; secret."""
    log_analytics_workspace_id: pulumi.Output[str]
    """The Log Analytics workspace's resource id, for container logs."""
    subscription_id: pulumi.Output[str]
    """The subscription the stack deploys into."""

    def __init__(self, name: str, args: WorkspaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:Workspace", name, None, opts)
        base, stack = args.base_name, args.stack
        child = pulumi.ResourceOptions(parent=self)
        # Stateful resources hold data or identity that a re-creation would lose; outside dev
        # stacks the config asks for `protect` so that a mistaken rename cannot delete them.
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)
        client = authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))

        group = resources.ResourceGroup(
            f"{name}-rg",
            resource_group_name=azure_name(Kind.RESOURCE_GROUP, base, stack, "rg"),
            opts=stateful,
        )
        rg = group.name
        account = storage.StorageAccount(
            f"{name}-storage",
            account_name=azure_name(Kind.STORAGE_ACCOUNT, base, stack),
            resource_group_name=rg,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=storage.SkuName.STANDARD_LRS),
            allow_blob_public_access=False,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            enable_https_traffic_only=True,
            opts=stateful,
        )
        # Private containers: registered model files, and data collected from services.
        models, model_data = (
            storage.BlobContainer(
                f"{name}-{container}",
                container_name=container,
                account_name=account.name,
                resource_group_name=rg,
                public_access=storage.PublicAccess.NONE,
                opts=stateful,
            )
            for container in (MODELS_CONTAINER, MODEL_DATA_CONTAINER)
        )
        vault = keyvault.Vault(
            f"{name}-vault",
            vault_name=azure_name(Kind.KEY_VAULT, base, stack),
            resource_group_name=rg,
            properties=keyvault.VaultPropertiesArgs(
                tenant_id=client.tenant_id,
                sku=keyvault.SkuArgs(family=keyvault.SkuFamily.A, name=keyvault.SkuName.STANDARD),
                # Access by Azure RBAC, not vault access policies that drift from role assignments.
                enable_rbac_authorization=True,
                enable_soft_delete=True,
                soft_delete_retention_in_days=7 if not args.protect else 90,
                # Purge protection cannot be turned off again; only protected stacks ask for it.
                enable_purge_protection=True if args.protect else None,
            ),
            # Azure fixes the retention when the vault is created (learn.microsoft.com/azure/key-vault/
            # general/soft-delete-overview): turning `protect` on later must not try to change it.
            opts=pulumi.ResourceOptions.merge(
                stateful, pulumi.ResourceOptions(ignore_changes=["properties.softDeleteRetentionInDays"])
            ),
        )
        logs = operationalinsights.Workspace(
            f"{name}-logs",
            workspace_name=azure_name(Kind.LOG_ANALYTICS, base, stack, "logs"),
            resource_group_name=rg,
            sku=operationalinsights.WorkspaceSkuArgs(name=operationalinsights.WorkspaceSkuNameEnum.PER_GB2018),
            retention_in_days=30,
            opts=stateful,
        )
        insights = applicationinsights.Component(
            f"{name}-insights",
            resource_name_=azure_name(Kind.APP_INSIGHTS, base, stack, "insights"),
            resource_group_name=rg,
            kind="web",
            application_type=applicationinsights.ApplicationType.WEB,
            workspace_resource_id=logs.id,
            ingestion_mode=applicationinsights.IngestionMode.LOG_ANALYTICS,
            opts=child,
        )
        registry = containerregistry.Registry(
            f"{name}-registry",
            registry_name=azure_name(Kind.CONTAINER_REGISTRY, base, stack),
            resource_group_name=rg,
            sku=containerregistry.SkuArgs(name=containerregistry.SkuName.BASIC),
            # Pulls use managed identities with AcrPull; an admin password would be a shared secret.
            admin_user_enabled=False,
            opts=stateful,
        )
        ml_workspace = machinelearningservices.Workspace(
            f"{name}-workspace",
            workspace_name=azure_name(Kind.ML_WORKSPACE, base, stack),
            resource_group_name=rg,
            identity=machinelearningservices.ManagedServiceIdentityArgs(
                type=machinelearningservices.ManagedServiceIdentityType.SYSTEM_ASSIGNED,
            ),
            sku=machinelearningservices.SkuArgs(name=args.sku, tier=machinelearningservices.SkuTier(args.sku)),
            friendly_name=base,
            storage_account=account.id,
            key_vault=vault.id,
            application_insights=insights.id,
            container_registry=registry.id,
            opts=stateful,
        )

        self.resource_group_name = rg
        self.workspace_name = ml_workspace.name
        self.workspace_id = ml_workspace.id
        self.storage_account_name = account.name
        self.storage_account_id = account.id
        self.blob_endpoint = account.primary_endpoints.blob
        self.models_container_name = models.name
        self.model_data_container_name = model_data.name
        self.registry_id = registry.id
        self.registry_name = registry.name
        self.registry_login_server = registry.login_server
        self.app_insights_connection_string = pulumi.Output.secret(insights.connection_string)
        self.log_analytics_workspace_id = logs.id
        self.subscription_id = client.subscription_id
        self.register_outputs(
            {
                "resource_group_name": self.resource_group_name,
                "workspace_name": self.workspace_name,
                "registry_login_server": self.registry_login_server,
                "storage_account_name": self.storage_account_name,
            }
        )
