"""Ready scoring scripts and conda envs for common model formats."""
