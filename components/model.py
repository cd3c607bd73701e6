"""A registered model: files uploaded to the workspace storage, registered as an Azure ML model version."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import machinelearningservices, storage

from components import TOKEN_PREFIX
from content.model import BundledModel


@dataclass(frozen=True)
class RegisteredModelArgs:
    """Inputs of a RegisteredModel."""

    content: BundledModel
    """The model's files and content version (`BundledModel.from_path`)."""
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    storage_account_name: pulumi.Input[str]
    models_container_name: pulumi.Input[str]
    blob_endpoint: pulumi.Input[str]
    """The storage account's blob endpoint, with a trailing slash."""
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = True
    """Protect the model container (its version history) from deletion."""


class RegisteredModel(pulumi.ComponentResource):
    """A model file or folder registered in an Azure ML workspace under a version derived from its bytes."""

    model_name: str
    """The Azure ML model name (the component name)."""
    version: str
    """The registered version: the first 12 hex digits of the model content's SHA-256."""
    model_uri: pulumi.Output[str]
    """Where the registered files live in the workspace storage."""
    version_id: pulumi.Output[str]
    """The Azure resource id of the registered model version."""

    def __init__(self, name: str, args: RegisteredModelArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:RegisteredModel", name, None, opts)
        self.model_name = name
        files = args.content.files
        self.version = args.content.version
        prefix = f"{name}/{self.version}"

        blobs = [
            storage.Blob(
                f"{name}-{f.relative}",
                blob_name=f"{prefix}/{f.relative}",
                account_name=args.storage_account_name,
                container_name=args.models_container_name,
                resource_group_name=args.resource_group_name,
                source=pulumi.FileAsset(str(f.source)),
                type=storage.BlobType.BLOCK,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for f in files
        ]
        container = machinelearningservices.ModelContainer(
            f"{name}-container",
            name=name,
            resource_group_name=args.resource_group_name,
            workspace_name=args.workspace_name,
            properties=machinelearningservices.ModelContainerPropertiesArgs(
                description=args.description or None,
                tags=args.tags,
            ),
            # The container holds every version ever registered: protected like the workspace.
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        # A single file is registered as that file; a folder as the folder.
        top = files[0].relative.parts[0]
        self.model_uri = pulumi.Output.concat(args.blob_endpoint, args.models_container_name, "/", prefix, "/", top)
        model_version = machinelearningservices.ModelVersion(
            f"{name}-version",
            name=container.name,
            version=self.version,
            resource_group_name=args.resource_group_name,
            workspace_name=args.workspace_name,
            properties=machinelearningservices.ModelVersionPropertiesArgs(
                model_uri=self.model_uri,
                model_type="custom_model",
                description=args.description or None,
                tags=args.tags,
                properties={"content_sha256_prefix": self.version, "file_count": str(len(files))},
            ),
            # The version is registered only once its files are in storage.
            opts=pulumi.ResourceOptions(parent=self, depends_on=blobs),
        )
        self.version_id = model_version.id
        self.register_outputs({"version": self.version, "model_uri": self.model_uri})
