"""ml-deploy's component resources: one module per concept of the Azure ML deployment workflow."""

TOKEN_PREFIX = "ml-deploy:index"
"""Every component's type token starts with this: `ml-deploy:index:<Component>`."""
