"""The ml-deploy Pulumi program: stack config -> workspace -> models -> images -> services."""
