"""The report's two pages: index.html (self-contained: inline CSS, figures beside it, no network)
and summary.md (the same tables in Markdown, for pasting into a pull request)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1600px; padding: 0 1rem;
       color: #222; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
nav a { margin-right: 1rem; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
td { max-width: 40rem; overflow-wrap: anywhere; }
.warn { color: #c0392b; font-weight: 600; } .muted { color: #777; }
"""


@dataclass(frozen=True)
class FigureEntry:
    """One saved figure: its file stem (name.png, name.svg beside the page), title and caption."""

    name: str
    title: str
    caption: str


@dataclass(frozen=True)
class Page:
    """Everything the pages show; tables are (title, frame, caption), skipped are notes."""

    runs: list[str]
    figures: list[FigureEntry]
    tables: list[tuple[str, pd.DataFrame, str]]
    failures: pd.DataFrame
    meta: pd.DataFrame
    skipped: list[str] = field(default_factory=list)


def failed_cells(failures: pd.DataFrame) -> int:
    """How many rows did not run (the failures table groups alike ones)."""
    return int(failures["cells"].sum()) if not failures.empty else 0


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, border=0, na_rep="")


def _figure_html(fig: FigureEntry) -> str:
    name = html.escape(fig.name)
    return (
        f'<figure id="{name}"><a href="{name}.svg"><img src="{name}.png" alt="{html.escape(fig.title)}"></a>'
        f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)} "
        f'(<a href="{name}.svg">SVG</a>, <a href="{name}.png">PNG</a>)</figcaption></figure>'
    )


def _failures_html(failures: pd.DataFrame) -> str:
    if failures.empty:
        return "<p>Every cell ran (status ok).</p>"
    return f'<p class="warn">{failed_cells(failures)} cells did not run.</p>' + _html_table(failures)


def render_html(page: Page) -> str:
    """index.html as a string."""
    runs = ", ".join(html.escape(r) for r in page.runs)
    sections = ["Figures", *[t for t, _, _ in page.tables], "Failed cells", "Configuration and environment"]
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>attnbench report: {runs}</title>",
        f"<style>{CSS}</style></head><body><h1>attnbench report</h1><p>Runs: <b>{runs}</b></p>",
        "<nav>" + "".join(f'<a href="#{_anchor(s)}">{html.escape(s)}</a>' for s in sections) + "</nav>",
    ]
    if not page.failures.empty:
        link = '<a href="#failed-cells">Failed cells</a>'
        parts.append(f'<p class="warn">{failed_cells(page.failures)} cells did not run: see {link}.</p>')
    parts.append(f'<h2 id="figures">Figures</h2>{"".join(_figure_html(f) for f in page.figures)}')
    parts += [f'<p class="muted">Not drawn: {html.escape(note)}</p>' for note in page.skipped]
    for title, df, caption in page.tables:
        parts.append(
            f'<h2 id="{_anchor(title)}">{html.escape(title)}</h2><p class="muted">{html.escape(caption)}</p>'
        )
        parts.append(_html_table(df))
    parts.append(f'<h2 id="failed-cells">Failed cells</h2>{_failures_html(page.failures)}')
    meta = _html_table(page.meta) if not page.meta.empty else "<p class='muted'>No run.json.</p>"
    parts.append(f'<h2 id="configuration-and-environment">Configuration and environment</h2>{meta}')
    return "\n".join(parts) + "\n</body></html>\n"


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped, newlines flattened)."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def render_markdown(page: Page) -> str:
    """summary.md as a string."""
    lines = [f"## attnbench report: {', '.join(page.runs)}", ""]
    if not page.failures.empty:
        lines += [f"**{failed_cells(page.failures)} cells did not run** (see Failed cells).", ""]
    for title, df, caption in page.tables:
        lines += [f"### {title}", "", caption, "", markdown_table(df), ""]
    lines += [
        "### Failed cells",
        "",
        markdown_table(page.failures) if not page.failures.empty else "none",
        "",
    ]
    lines += ["### Figures", ""] + [
        f"- [{f.title}]({f.name}.png) ([SVG]({f.name}.svg))" for f in page.figures
    ]
    lines += [f"- not drawn: {note}" for note in page.skipped]
    return "\n".join(lines) + "\n"


def write_pages(page: Page, out: Path) -> list[Path]:
    """Write index.html and summary.md into `out`; returns their paths."""
    index, summary = out / "index.html", out / "summary.md"
    index.write_text(render_html(page), encoding="utf-8")
    summary.write_text(render_markdown(page), encoding="utf-8")
    return [index, summary]
