"""`python -m harness`: the `attnbench` command line."""

from .cli import main

main()
