"""`ml-deploy`, the command line: the offline plan, calling a service, and reading its logs."""
