"""Stand-in for `azureml.contrib.services.aml_request`."""

from serving.raw import AMLRequest, rawhttp

__all__ = ["AMLRequest", "rawhttp"]
