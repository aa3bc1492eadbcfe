"""The `attnbench` command line (Typer): `app` and `main`, with every command registered.

app.py holds the Typer app, the options commands share and the sweep, accuracy, report and list
commands; tools.py holds check, init, calibrate, selftest and compare; generate.py holds
generate; decide.py holds decide; conform.py holds conform. Command modules import the app; this
package imports them (registering their commands, in `attnbench --help`'s order), and nothing
imports this package back: no import circle.
"""

from . import conform, decide, generate, tools  # noqa: F401  (register their commands on `app`)
from .app import app


def main() -> None:
    app()
