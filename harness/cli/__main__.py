"""`python -m harness.cli`: the `attnbench` command line."""

from . import main

main()
