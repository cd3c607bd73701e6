"""Target-neutral content: a model's files and content version, and the scoring bundle built from them.

Nothing here knows about Azure, Kubernetes or Pulumi: every target (cloud or local) builds on it.
"""
