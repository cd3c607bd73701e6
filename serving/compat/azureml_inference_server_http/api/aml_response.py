"""Stand-in for `azureml_inference_server_http.api.aml_response`."""

from serving.raw import AMLResponse

__all__ = ["AMLResponse"]
