import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from reports.page import markdown_table
from reports.render import default_out, render

from .ab_runs import write_pair
from .fabricate import accuracy_frame, sweep_frame, write_run

PAGE_PX = 2000  # 1600 px page / 0.8
FIGURES = ["latency", "memory", "speedup_vs_mha", "tflops", "accuracy", "accuracy_vs_kv_cache"]
runner = CliRunner()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One full report shared by the page tests: drawing and saving twelve image files takes
    ~5-10 s on the shared 2-core box, so it is done once per module, not per test."""
    run = tmp_path_factory.mktemp("rendered") / "run-a"
    write_run(run, sweep=sweep_frame(seq_lens=(128, 256), oom_at=256), accuracy=accuracy_frame())
    return run, render([run])


def test_render_writes_every_figure_and_both_pages(rendered):
    run_dir, written = rendered
    out = run_dir / "report"
    expected = {f"{name}.{ext}" for name in FIGURES for ext in ("png", "svg")} | {"index.html", "summary.md"}
    assert {p.name for p in written} == expected
    assert all(p.parent == out and p.stat().st_size > 0 for p in written)
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_index_references_every_figure_that_exists(rendered):
    out = rendered[0] / "report"
    page = (out / "index.html").read_text()
    for image in out.glob("*.png"):
        assert f'src="{image.name}"' in page
        assert f'href="{image.stem}.svg"' in page
    assert not re.search(r"(src|href)=\"https?:", page)  # self-contained: nothing fetched
    for heading in (
        "Latency",
        "Speedup against MHA",
        "Accuracy",
        "Failed cells",
        "Configuration and environment",
    ):
        assert f">{heading}</h2>" in page
    assert "CUDA out of memory" in page and "environment.device_name" in page and "fake-cpu" in page


def test_summary_markdown_has_tables_and_failures(rendered):
    summary = (rendered[0] / "report" / "summary.md").read_text()
    assert "| mode | series | n=128 | n=256 |" in summary
    assert "| fwd_bwd | mha g=8 |" in summary and "| oom |" in summary
    assert "**6 cells did not run**" in summary  # 1 oom + 2x2 unsupported decode + 1 accuracy error
    assert "| run-a | sweep.csv | kdgqa |  | decode |  | 8 | 2 | 128, 256 |  | 2 | unsupported |" in summary
    assert "[Latency against sequence length](latency.png)" in summary


def test_accuracy_only_run_draws_accuracy_figures(tmp_path):
    run = write_run(tmp_path / "acc", accuracy=accuracy_frame())
    names = {p.stem for p in render([run])}
    assert names == {"accuracy", "accuracy_vs_kv_cache", "index", "summary"}


def test_figure_without_values_is_listed_as_not_drawn(tmp_path):
    run = write_run(tmp_path / "r", sweep=sweep_frame(seq_lens=(128, 256)).assign(tflops=None))
    names = {p.stem for p in render([run])}
    assert "tflops" not in names and "latency" in names
    assert (
        "Not drawn: tflops: sweep.csv has no values in [&#x27;tflops&#x27;]"
        in (run / "report" / "index.html").read_text()
    )


def test_several_runs_compare_beside_the_first(tmp_path):
    """~8 s: a full two-run report (twice the series to draw); it is the only overlay test of render.
    Run B has one cell 1.5x slower and one 1.5x faster than A (tests/reports/ab_runs.py)."""
    run_dir, other_run_dir = write_pair(tmp_path)
    assert default_out([run_dir]) == run_dir / "report"
    out = default_out([run_dir, other_run_dir])
    assert out == run_dir.parent / "compare_run-a_vs_run-b"
    names = {p.name for p in render([run_dir, other_run_dir])}
    assert {"ratio.png", "ratio.svg"} <= names
    summary = (out / "summary.md").read_text()
    assert "### run-b against run-a" in summary and "1 slower, 1 faster, 30 same, 4 not run." in summary
    assert "| cell | A ms | B ms | B/A | verdict | note |" in summary and "cannot be estimated" in summary
    assert re.search(r"\| gqa fwd n=256 g=2 \| [\d.]+ \| [\d.]+ \| 1\.[45]\d?× \| slower \|", summary)
    page = (out / "index.html").read_text()
    assert 'src="ratio.png"' in page and ">run-b against run-a</h2>" in page and "<td>faster</td>" in page


def test_a_run_over_two_devices_is_reported_device_by_device_and_never_compared(tmp_path):
    """A Ray sweep over a cluster of mixed GPU models: each device is its own run in every figure
    and table; two runs on different devices are drawn, and not compared run against run."""
    mixed = pd.concat([sweep_frame().assign(accelerator="A100"), sweep_frame().assign(accelerator="H100")])
    run = write_run(tmp_path / "mixed", sweep=mixed)
    render([run], tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "mixed · fake-cpu [A100]" in summary and "mixed · fake-cpu [H100]" in summary
    assert "[H100] against" not in summary  # no run-against-run table across the two devices
    page = (tmp_path / "report" / "index.html").read_text()
    assert "latencies are not compared across devices" in page


def test_markdown_table_escapes_pipes():
    assert markdown_table(pd.DataFrame({"a": ["x|y"]})) == "| a |\n| --- |\n| x\\|y |"


def test_cli_report_writes_files(run_dir, tmp_path):
    out = tmp_path / "cli-out"
    result = runner.invoke(app, ["report", str(run_dir), "--out", str(out), "--seq-len", "128"])
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output
    assert (out / "index.html").exists() and (out / "speedup_vs_mha.svg").exists()
    speedups = [line for line in (out / "summary.md").read_text().splitlines() if line.endswith("× |")]
    assert speedups and all("| 128 |" in line for line in speedups)  # --seq-len picked the heatmap's n


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "holds no sweep.csv or accuracy.csv"),
        (lambda d: (d / "sweep.csv").write_text(""), "is empty"),
        (lambda d: (d / "sweep.csv").write_text("variant,mode\ngqa,fwd\n"), "missing required columns"),
        (
            lambda d: (d / "accuracy.csv").write_text("task,variant,accuracy,status\n"),
            "has a header but no rows",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, setup, message):
    setup(tmp_path)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_unknown_seq_len_exits_2(run_dir):
    result = runner.invoke(app, ["report", str(run_dir), "--seq-len", "999"])
    assert result.exit_code == 2 and "seq_len=999" in result.output


def test_every_figure_has_one_legend_under_it_and_fits_the_page(tmp_path, monkeypatch):
    """No panel carries its own legend (17 series made 17-line legends per panel), and every
    image is at most PAGE_PX wide, so the page (1600 px) shows it at >= 80 % of its size and its
    numbers read without zooming (six variants' heatmaps side by side made 2,400 px)."""
    import matplotlib.image

    import reports.render as render_mod

    figures = {}

    def spy(fig, out, name):
        figures[name] = fig
        return save(fig, out, name)

    save = render_mod._save
    monkeypatch.setattr(render_mod, "_save", spy)
    run = write_run(
        tmp_path / "run", sweep=sweep_frame(seq_lens=(128, 256), oom_at=256), accuracy=accuracy_frame()
    )
    render([run])
    assert set(FIGURES) <= set(figures)
    for name, fig in figures.items():
        assert [ax.get_legend() for ax in fig.axes] == [None] * len(fig.axes), name
        assert len(fig.legends) <= 1, name
        width = matplotlib.image.imread(run / "report" / f"{name}.png").shape[1]
        assert width <= PAGE_PX, (name, width)
