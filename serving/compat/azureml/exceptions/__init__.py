"""Stand-in for `azureml.exceptions`: the exceptions `Model.get_model_path` raises."""

from serving.models import AzureMLException, ModelNotFoundException, WebserviceException

__all__ = ["AzureMLException", "ModelNotFoundException", "WebserviceException"]
