"""Stand-in for azureml-core inside a deployment: only `Model` (for `Model.get_model_path`)."""

from serving.models import Model

__all__ = ["Model"]
