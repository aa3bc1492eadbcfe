"""The decode throughput figure: tokens/s against batch size, a line per variant, a panel per
length distribution and layout."""

import pandas as pd
import pytest

from reports import serving


def rows() -> pd.DataFrame:
    base = dict(status="ok", mode="decode", dim=64, n_heads=4, n_kv_heads=2, head_dim=16, dtype="float32",
                compile="off", q_len=1, page_size=16)  # fmt: skip
    out = []
    for layout, waste in (("padded", 1.6), ("paged", 1.01)):
        for variant in ("gqa", "mla"):
            for b in (8, 32):
                served = {"lengths": "uniform:512-8192", "kv_layout": layout, "padding_waste": waste}
                out.append({**base, **served, "variant": variant, "options": "", "batch": b,
                            "tokens_per_s": 100.0 * b})  # fmt: skip
    out.append({**base, "variant": "gqa", "options": "", "batch": 8, "mode": "fwd", "lengths": "",
                "kv_layout": "", "tokens_per_s": None})  # fmt: skip
    return pd.DataFrame(out)


def test_one_panel_per_layout_one_line_per_variant():
    fig = serving.throughput_figure(rows())
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 2
    for ax in axes:
        assert len(ax.lines) == 2
        assert list(ax.lines[0].get_xdata()) == [8, 32]
    titles = sorted(ax.get_title() for ax in axes)
    assert "paged (pages of 16)" in titles[1] and "padding_waste 1.01" in titles[1]
    assert "padded" in titles[0] and "padding_waste 1.60" in titles[0]


def test_no_decode_rows_is_an_error():
    with pytest.raises(ValueError, match="no ok decode rows"):
        serving.throughput_figure(rows().query("mode == 'fwd'"))
