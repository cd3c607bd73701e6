"""Stand-in for `azureml.core.model`: `Model.get_model_path` over the deployed models."""

from serving.models import Model

__all__ = ["Model"]
