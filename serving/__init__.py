"""The scoring runtime: serves an Azure ML scoring script (`init()`, `run()`) over HTTP.

It runs inside every scoring image and behind every local service. Importing this package is
cheap: deployment code imports `serving.settings` for the environment variable names.
"""

__version__ = "1.1.0"
"""This runtime's version, sent as `x-ms-server-version: ml-deploy-serving/<version>`."""
