"""Per component: types, inputs, parents, names, secrecy and protect, as registered from the dev config."""

from __future__ import annotations

import pytest

from components.naming import Kind, is_valid
from tests.helpers import ACR_PULL, has_resource

RG = "azure-native:resources:ResourceGroup"
STORAGE = "azure-native:storage:StorageAccount"
VAULT = "azure-native:keyvault:Vault"
REGISTRY = "azure-native:containerregistry:Registry"
ML_WS = "azure-native:machinelearningservices:Workspace"
GROUP = "azure-native:containerinstance:ContainerGroup"
ROLE = "azure-native:authorization:RoleAssignment"
IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
STATEFUL = (RG, STORAGE, VAULT, REGISTRY, ML_WS, "azure-native:operationalinsights:Workspace",
            "azure-native:machinelearningservices:ModelContainer")


class TestWorkspace:
    def test_registry_admin_user_is_disabled(self, config, run):
        assert has_resource(run(config), REGISTRY, {"adminUserEnabled": False})

    def test_workspace_is_tied_to_its_resources(self, config, run):
        rec = run(config)
        ws = rec.of_type(ML_WS)[0].inputs
        ids = {t: rec.of_type(t)[0].id for t in (STORAGE, VAULT, REGISTRY, "azure-native:applicationinsights:Component")}
        assert ws["storageAccount"] == ids[STORAGE]
        assert ws["keyVault"] == ids[VAULT]
        assert ws["containerRegistry"] == ids[REGISTRY]
        assert ws["applicationInsights"] == ids["azure-native:applicationinsights:Component"]
        assert ws["identity"] == {"type": "SystemAssigned"}

    def test_app_insights_is_workspace_based(self, config, run):
        rec = run(config)
        logs = rec.of_type("azure-native:operationalinsights:Workspace")[0]
        assert has_resource(rec, "azure-native:applicationinsights:Component",
                            {"workspaceResourceId": logs.id, "ingestionMode": "LogAnalytics"})

    def test_physical_names_are_valid_for_each_kind(self, config, run):
        rec = run(config)
        assert is_valid(Kind.STORAGE_ACCOUNT, rec.of_type(STORAGE)[0].inputs["accountName"])
        assert is_valid(Kind.KEY_VAULT, rec.of_type(VAULT)[0].inputs["vaultName"])
        assert is_valid(Kind.CONTAINER_REGISTRY, rec.of_type(REGISTRY)[0].inputs["registryName"])
        assert is_valid(Kind.ML_WORKSPACE, rec.of_type(ML_WS)[0].inputs["workspaceName"])
        assert is_valid(Kind.CONTAINER_GROUP, rec.of_type(GROUP)[0].inputs["containerGroupName"])

    def test_names_differ_between_stacks(self, config, run):
        dev, prod = run(config, stack="dev"), run(config, stack="prod")
        assert dev.of_type(STORAGE)[0].inputs["accountName"] != prod.of_type(STORAGE)[0].inputs["accountName"]

    @pytest.mark.parametrize("protect", [True, False])
    def test_stateful_resources_follow_protect(self, config, run, protect):
        config["ml-deploy:workspace"]["protect"] = protect
        rec = run(config)
        for t in STATEFUL:
            assert all(r.protect is protect for r in rec.of_type(t)), t
        # Services and images are rebuilt from config at will: never protected.
        assert not any(r.protect for r in rec.of_type(GROUP))

    def test_protect_defaults_to_true(self, config, run):
        del config["ml-deploy:workspace"]["protect"]
        assert run(config).of_type(STORAGE)[0].protect


class TestRegisteredModel:
    def test_version_points_at_the_uploaded_file(self, config, run):
        rec = run(config)
        version = rec.of_type("azure-native:machinelearningservices:ModelVersion")[0]
        blob = rec.of_type("azure-native:storage:Blob")[0]
        v = version.inputs["version"]
        assert blob.inputs["blobName"] == f"diabetes-ridge/{v}/diabetes-ridge.pkl"
        assert version.inputs["properties"]["modelUri"].endswith(f"/models/diabetes-ridge/{v}/diabetes-ridge.pkl")
        assert version.inputs["properties"]["tags"] == {"data": "diabetes", "type": "regression"}
        assert blob.urn in version.dependencies

    def test_a_folder_model_uploads_every_file(self, config, run, tmp_path, model_files):
        folder = tmp_path / "bundle"
        (folder / "sub").mkdir(parents=True)
        (folder / "model.pkl").write_bytes(model_files[0].read_bytes())
        (folder / "sub" / "vocab.txt").write_text("a\nb\n")
        config["ml-deploy:models"][0]["path"] = str(folder)
        rec = run(config)
        names = sorted(b.inputs["blobName"].split("/", 2)[2] for b in rec.of_type("azure-native:storage:Blob"))
        assert names == ["bundle/model.pkl", "bundle/sub/vocab.txt"]


class TestAciService:
    def test_pulls_with_a_managed_identity_holding_acrpull(self, config, run):
        rec = run(config)
        group = rec.of_type(GROUP)[0]
        identity = rec.of_type(IDENTITY)[0]
        role = rec.of_type(ROLE)[0]
        assert role.inputs["principalId"] == identity.outputs["principalId"]
        assert role.inputs["roleDefinitionId"].endswith(f"/roleDefinitions/{ACR_PULL}")
        assert role.inputs["scope"] == rec.of_type(REGISTRY)[0].id
        cred = group.inputs["imageRegistryCredentials"][0]
        assert cred["identity"] == identity.id and "password" not in cred and "username" not in cred
        assert group.inputs["identity"]["type"] == "UserAssigned"
        assert role.urn in group.dependencies

    def test_container_has_resources_and_probes(self, config, run):
        container = run(config).of_type(GROUP)[0].inputs["containers"][0]
        assert container["resources"]["requests"] == {"cpu": 1.0, "memoryInGB": 1.0}
        assert container["livenessProbe"]["httpGet"]["path"] == "/"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"

    def test_auth_keys_are_secret(self, config, run):
        rec = run(config)
        group = rec.of_type(GROUP)[0]
        env = {e["name"]: e for e in group.inputs["containers"][0]["environmentVariables"]}
        assert "secureValue" in env["SCORING_AUTH_KEYS"] and "value" not in env["SCORING_AUTH_KEYS"]
        assert "secureValue" in env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
        assert env["SERVICE_NAME"]["value"] == config["ml-deploy:services"][0]["name"]  # the swagger title
        # Exactly the two secure values are secret, nothing else of the group.
        names = [e["name"] for e in group.inputs["containers"][0]["environmentVariables"]]
        assert group.secret_paths == {f"containers[0].environmentVariables[{names.index(n)}].secureValue"
                                      for n in ("SCORING_AUTH_KEYS", "APPLICATIONINSIGHTS_CONNECTION_STRING")}
        assert len(rec.of_type("random:index/randomPassword:RandomPassword")) == 2

    def test_no_auth_means_no_keys(self, config, run):
        config["ml-deploy:services"][0]["auth_enabled"] = False
        config["ml-deploy:services"][0]["enable_app_insights"] = False
        rec = run(config)
        env = {e["name"] for e in rec.of_type(GROUP)[0].inputs["containers"][0]["environmentVariables"]}
        assert "SCORING_AUTH_KEYS" not in env and "APPLICATIONINSIGHTS_CONNECTION_STRING" not in env
        assert rec.of_type("random:index/randomPassword:RandomPassword") == []

    def test_sdk_defaults_when_sizes_are_omitted(self, config, run):
        for key in ("cpu_cores", "memory_gb"):
            del config["ml-deploy:services"][0][key]
        container = run(config).of_type(GROUP)[0].inputs["containers"][0]
        assert container["resources"]["requests"] == {"cpu": 0.1, "memoryInGB": 0.5}
