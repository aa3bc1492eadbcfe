"""reports: CSV -> matplotlib figures and an HTML/Markdown summary.

It reads only the CSV/JSON files a run wrote and never imports harness, so old runs can be
redrawn after the code changes.
"""

from .load import Run, load_run, load_runs
from .render import default_out, render

__all__ = ["Run", "default_out", "load_run", "load_runs", "render"]
