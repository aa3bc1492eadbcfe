"""reports: CSV -> matplotlib figures and an HTML/Markdown summary.

It reads only the CSV/JSON files a run wrote and never imports harness, so old runs can be
redrawn after the code changes.

Submodules are imported where they are used (`from reports.render import render`), so that
a caller that wants a table does not pay for matplotlib's import.
"""

from .load import Run, load_run, load_runs

__all__ = ["Run", "load_run", "load_runs"]
