"""Stand-in for `azureml_inference_server_http.api.aml_request`."""

from serving.raw import AMLRequest, rawhttp

__all__ = ["AMLRequest", "rawhttp"]
