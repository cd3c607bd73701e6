"""Stand-in for azureml-inference-server-http's script-facing API (`api.aml_request`, `api.aml_response`)."""

__version__ = "1.5.1"
"""The azureml-inference-server-http release whose command line, settings and script API this runtime's
`azmlinfsrv` follows (tools read it as the reference's version: see docs/azmlinfsrv.md)."""
