"""`python -m serving`: serve a scoring script."""

from serving.server import main

main()
