"""Bad stack configs fail with one error naming the config path, before any resource is registered."""

from __future__ import annotations

import pytest

from infra.config import ConfigError
from tests.helpers import assert_rejected, run_config


def test_memory_must_be_positive(config):
    config["ml-deploy:services"][0]["memory_gb"] = 0
    assert_rejected(config, "services[0].memory_gb", "greater than 0")


def test_cpu_cores_over_the_aci_limit(config):
    config["ml-deploy:services"][0]["cpu_cores"] = 8
    assert_rejected(config, "services[0].cpu_cores", "less than or equal to 4")


def test_unknown_service_key_is_a_typo(config):
    config["ml-deploy:services"][0]["memroy_gb"] = 1
    assert_rejected(config, "services[0].memroy_gb", "extra inputs are not permitted")


def test_unknown_target(config):
    config["ml-deploy:services"][0]["target"] = "gke"
    assert_rejected(config, "services[0].target", "unknown target 'gke'")


def test_image_names_a_missing_model(config):
    config["ml-deploy:images"][0]["models"] = ["diabetes-ridge", "nope"]
    assert_rejected(config, "images[0].models[1]", "no model named 'nope'")


def test_service_names_a_missing_image(config):
    config["ml-deploy:services"][0]["image"] = "missing"
    assert_rejected(config, "services[0].image", "no image named 'missing'")


def test_duplicate_model_names(config):
    config["ml-deploy:models"].append(dict(config["ml-deploy:models"][0]))
    assert_rejected(config, "models[1].name", "already used by models[0]")


def test_model_path_must_exist(config):
    config["ml-deploy:models"][0]["path"] = "models/does-not-exist.pkl"
    assert_rejected(config, "models[0].path", "does not exist")


def test_execution_script_must_be_python(config):
    config["ml-deploy:images"][0]["execution_script"] = config["ml-deploy:images"][0]["conda_file"]
    assert_rejected(config, "images[0].execution_script", "must be a .py file")


def test_service_name_rules(config):
    config["ml-deploy:services"][0]["name"] = "Diabetes_ACI"
    assert_rejected(config, "services[0].name", "should match pattern")


def test_workspace_is_required(config):
    del config["ml-deploy:workspace"]
    assert_rejected(config, "workspace", "required")


def test_unknown_top_level_key(config):
    config["ml-deploy:service"] = []
    assert_rejected(config, "service", "unknown key")


def test_image_needs_a_model(config):
    config["ml-deploy:images"][0]["models"] = []
    assert_rejected(config, "images[0].models", "at least 1 item")


def test_every_problem_is_reported_at_once(config):
    config["ml-deploy:services"][0]["memory_gb"] = -1
    config["ml-deploy:services"][0]["cpu_cores"] = 0
    with pytest.raises(ConfigError) as caught:
        run_config(config)
    paths = {p.split(":")[0] for p in caught.value.problems}
    assert {"services[0].memory_gb", "services[0].cpu_cores"} <= paths


def test_local_service_needs_a_local_workspace(config):
    config["ml-deploy:services"][0]["target"] = "local"
    for key in ("cpu_cores", "memory_gb", "enable_app_insights"):
        config["ml-deploy:services"][0].pop(key)
    assert_rejected(config, "services[0].target", "needs a workspace of kind local")


def test_aci_service_needs_an_azure_workspace(config):
    config["ml-deploy:workspace"]["kind"] = "local"
    assert_rejected(config, "services[0].target", "needs a workspace of kind azure")
