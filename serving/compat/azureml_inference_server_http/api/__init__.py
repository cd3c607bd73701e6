"""Stand-in for `azureml_inference_server_http.api`."""
