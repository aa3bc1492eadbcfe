"""The backend x compile figure, from a sweep CSV's columns alone."""

import pandas as pd
import pytest

from reports import kernel_figures as kf


def frame():
    rows = []
    for variant, options in (("gqa", ""), ("mmca", "visual_attention=full")):
        for backend in ("sdpa", "eager", "flex", "sdpa_cudnn"):
            for compile in ("off", "default"):
                ok = backend != "sdpa_cudnn"
                opts = ";".join(p for p in (f"backend={backend}" if backend != "sdpa" else "", options) if p)
                rows.append(dict(
                    variant=variant, options=opts, mode="fwd", seq_len=256, n_heads=8, n_kv_heads=2, batch=1,
                    head_dim=64, dtype="float32", device="cpu", status="ok" if ok else "unsupported",
                    latency_ms_median=2.0 if ok else None, latency_ms_p10=1.5 if ok else None,
                    latency_ms_p90=2.5 if ok else None, backend=backend, compile=compile,
                    compile_s=30.0 if compile != "off" and ok else None,
                    setup_s=0.002 if backend == "flex" else 0.0,
                ))  # fmt: skip
    small = dict(rows[0], seq_len=128)  # another n: the figure keeps the largest
    return pd.DataFrame([*rows, small])


def test_one_panel_per_variant_and_mode_at_the_largest_n():
    cells = kf.kernel_cells(frame())
    assert set(cells["seq_len"]) == {256}
    assert set(cells["label"]) == {"gqa", "mmca(visual_attention=full)"}  # the backend left out
    fig = kf.backend_compile_figure(frame())
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["gqa: fwd, n=256", "mmca(visual_attention=full): fwd, n=256"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sdpa", "sdpa_cudnn", "eager", "flex"]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("unsupported") == 2  # sdpa_cudnn, off and default: marked, not dropped
    assert "c 30.0s" in texts and any("m 2.0ms" in t for t in texts)


def test_a_chosen_seq_len_and_the_nothing_to_compare_case():
    assert set(kf.kernel_cells(frame(), seq_len=128)["backend"]) == {"sdpa"}
    df = frame()
    assert kf.has_axes(df)
    plain = df[(df["backend"] == "sdpa") & (df["compile"] == "off")]
    assert not kf.has_axes(plain) and not kf.has_axes(plain.drop(columns="compile"))
    with pytest.raises(ValueError, match="no sweep rows at seq_len=999"):
        kf.backend_compile_figure(df, seq_len=999)


def test_without_backend_keeps_the_other_options():
    assert kf.without_backend("backend=flex;visual_attention=full") == "visual_attention=full"
    assert kf.without_backend("backend=eager") == ""
