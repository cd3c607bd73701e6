"""Stand-in for `azureml.contrib.services.aml_response`."""

from serving.raw import AMLResponse

__all__ = ["AMLResponse"]
