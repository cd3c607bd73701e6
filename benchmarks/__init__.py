"""Benchmarks: scripts that print numbers, side by side with a peer, never timed unit tests."""
