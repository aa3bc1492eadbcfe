"""reports: CSV -> matplotlib figures and an HTML/Markdown summary.

It reads only the CSV/JSON files a run wrote and never imports harness, so old runs can be
redrawn after the code changes.
"""
