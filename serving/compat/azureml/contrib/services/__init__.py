"""Stand-in for azureml-contrib-services: raw HTTP access for scoring scripts."""

from serving.raw import rawhttp

__all__ = ["rawhttp"]
