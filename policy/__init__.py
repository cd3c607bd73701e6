"""The ml-deploy policy pack (pulumi-policy): rules in `rules.py`, the pack in `__main__.py`."""
