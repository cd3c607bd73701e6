"""IoT Edge deployment manifests: valid against the official schemas, createOptions chunked at 512
characters into at most 8 pieces, and the checks the schemas cannot make."""

from __future__ import annotations

import copy
import json

import pytest

from content import edge_manifest as em
from tests.helpers import edge_manifest_errors

REGISTRY = "mlwsdev0a1b2c.azurecr.io"
CREDENTIALS = {"mlwsdev0a1b2c": em.RegistryCredential(REGISTRY, "mlws-dev-diabetes-edge", "p" * 44)}


def scoring(env: dict[str, str] | None = None, **kw) -> em.Module:
    return em.Module(name="diabetes-edge", image=f"{REGISTRY}/diabetes:0123456789abcdef", container_port=5001,
                     host_port=kw.pop("host_port", 5001), env=env if env is not None else {"WORKER_COUNT": "1"},
                     where="services[1]", **kw)


def manifest(*modules: em.Module, routes: dict[str, str] | None = None) -> dict:
    return em.deployment(list(modules) or [scoring()], CREDENTIALS, routes or {})


def env_of_length(total: int) -> dict[str, str]:
    """An env whose module create options minify to exactly `total` characters."""
    base = len(em.minified(em.create_options(scoring({"V": ""}))))
    return {"V": "x" * (total - base)}


# ---- the official schemas ------------------------------------------------------------------------

def test_a_scoring_deployment_is_valid_against_the_schemas():
    routes = {"upstream": "FROM /messages/modules/diabetes-edge/outputs/* INTO $upstream"}
    assert edge_manifest_errors(manifest(routes=routes)) == []


def test_a_deployment_with_chunked_create_options_is_valid_against_the_schemas():
    big = manifest(scoring(env_of_length(3 * em.CHUNK + 7)))
    assert set(big["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["diabetes-edge"]["settings"]) == {
        "image", "createOptions", "createOptions01", "createOptions02", "createOptions03"}
    assert edge_manifest_errors(big) == []


def test_the_runtime_only_deployment_is_valid_and_runs_no_module():
    runtime = em.runtime_only()
    desired = runtime["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert desired["modules"] == {} and desired["runtime"]["settings"]["registryCredentials"] == {}
    assert edge_manifest_errors(runtime) == []


def test_the_schemas_are_not_vacuous():
    broken = copy.deepcopy(manifest())
    module = broken["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["diabetes-edge"]
    module["restartPolicy"] = "sometimes"
    del broken["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    errors = edge_manifest_errors(broken)
    assert any("restartPolicy" in e and "deployment-2.0" in e for e in errors)
    assert any("edgeagent-deployment-1.1" in e and "sometimes" in e for e in errors)
    assert any("edgehub-deployment-1.1" in e and "routes" in e for e in errors)


def test_system_modules_run_the_supported_lts_release_at_schema_1_1():
    desired = manifest()["modulesContent"]
    agent = desired["$edgeAgent"]["properties.desired"]
    assert agent["schemaVersion"] == desired["$edgeHub"]["properties.desired"]["schemaVersion"] == "1.1"
    assert agent["systemModules"]["edgeAgent"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.6"
    assert agent["systemModules"]["edgeHub"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-hub:1.6"


def test_edge_hub_keeps_messages_for_the_store_and_forward_time():
    hub = em.deployment([scoring()], CREDENTIALS, {}, 600)["modulesContent"]["$edgeHub"]["properties.desired"]
    assert hub["storeAndForwardConfiguration"] == {"timeToLiveSecs": 600} and hub["routes"] == {}


def test_the_scoring_module_binds_its_port_and_sets_its_env():
    module = manifest(scoring({"WORKER_COUNT": "2"}, host_port=8080, secret_env={"SCORING_AUTH_KEYS": "a,b"},
                              restart_policy="on-failure"))
    twin = module["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["diabetes-edge"]
    options = json.loads(em.joined(twin["settings"]))
    assert options["HostConfig"]["PortBindings"] == {"5001/tcp": [{"HostPort": "8080"}]}
    assert options["Env"] == ["WORKER_COUNT=2"] and "SCORING_AUTH_KEYS" not in em.joined(twin["settings"])
    assert twin["env"] == {"SCORING_AUTH_KEYS": {"value": "a,b"}}
    assert (twin["restartPolicy"], twin["status"], twin["type"]) == ("on-failure", "running", "docker")


def test_registry_credentials_are_keyed_by_registry_and_name_the_token():
    creds = manifest()["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"]
    assert creds == {"mlwsdev0a1b2c": {"address": REGISTRY, "username": "mlws-dev-diabetes-edge", "password": "p" * 44}}


# ---- chunking -------------------------------------------------------------------------------------

def test_create_options_within_512_characters_stay_one_value():
    settings = em.chunked(em.create_options(scoring(env_of_length(em.CHUNK))), "services[1]")
    assert list(settings) == ["createOptions"] and len(settings["createOptions"]) == em.CHUNK


def test_create_options_over_512_characters_are_split_in_order():
    options = em.create_options(scoring(env_of_length(em.CHUNK + 1)))
    settings = em.chunked(options, "services[1]")
    assert list(settings) == ["createOptions", "createOptions01"]
    assert [len(v) for v in settings.values()] == [em.CHUNK, 1]
    assert json.loads(em.joined(settings)) == options


def test_eight_chunks_is_the_most():
    settings = em.chunked(em.create_options(scoring(env_of_length(em.CHUNK * em.MAX_CHUNKS))), "services[1]")
    assert list(settings)[-1] == "createOptions07" and len(settings) == 8


def test_over_4096_characters_is_an_error_naming_the_service():
    with pytest.raises(em.ManifestError, match=r"^services\[1\]: .*4097 characters.*at most 4096"):
        em.deployment([scoring(env_of_length(em.CHUNK * em.MAX_CHUNKS + 1))], CREDENTIALS, {})


def test_create_options_are_minified_ascii():
    text = em.minified(em.create_options(scoring({"GREETING": "grüß"})))
    assert " " not in text and text.isascii() and "gr\\u00fc\\u00df" in text


# ---- what the schemas miss ----------------------------------------------------------------------

def _module(doc: dict) -> dict:
    return doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["diabetes-edge"]


def _schema_only(doc: dict) -> list[str]:
    found = set(em.problems(doc))
    return [e for e in edge_manifest_errors(doc) if e not in found]


def test_create_options_that_are_not_json_pass_the_schemas_but_not_the_checks():
    doc = manifest()
    _module(doc)["settings"]["createOptions"] = '{"Env": ['
    assert _schema_only(doc) == []
    assert any("not JSON" in p for p in em.problems(doc))


def test_a_gap_in_the_chunks_is_found():
    doc = manifest(scoring(env_of_length(2 * em.CHUNK + 1)))
    del _module(doc)["settings"]["createOptions01"]
    assert _schema_only(doc) == []
    assert any("createOptions keys" in p for p in em.problems(doc))


def test_a_chunk_over_512_characters_is_found():
    doc = manifest(scoring(env_of_length(em.CHUNK + 1)))
    settings = _module(doc)["settings"]
    settings["createOptions"] += settings.pop("createOptions01")
    assert _schema_only(doc) == []
    assert any("513 characters, over 512" in p for p in em.problems(doc))


def test_a_schema_version_the_unanchored_pattern_lets_through_is_found():
    doc = manifest()
    doc["modulesContent"]["$edgeHub"]["properties.desired"]["schemaVersion"] = "11.1"
    assert _schema_only(doc) == []
    assert em.problems(doc) == ["$edgeHub schemaVersion is '11.1', not '1.1'"]


def test_an_image_from_a_registry_without_credentials_is_found():
    with pytest.raises(em.ManifestError, match=r"services\[1\]: module diabetes-edge: no registryCredentials"):
        em.deployment([scoring()], {}, {})


def test_two_modules_on_one_host_port_are_found():
    other = em.Module(name="other", image=f"{REGISTRY}/other:1", container_port=80, host_port=5001, where="services[2]")
    with pytest.raises(em.ManifestError, match="both bind host port 5001"):
        manifest(scoring(), other)


def test_a_module_on_an_edge_hub_port_is_found():
    with pytest.raises(em.ManifestError, match="edgeHub and diabetes-edge both bind host port 443"):
        manifest(scoring(host_port=443))
