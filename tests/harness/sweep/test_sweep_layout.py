"""The sweep's `layout` setting (issue 17): prefix or interleaved images, said by every cell and row."""

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from harness.measure import workload
from harness.sweep import runner as sweep
from harness.sweep.grid import row_key
from harness.sweep.runner import grid


def tiny_config(tmp_path, **kw):
    base = dict(seq_len=(16,), heads=(4,), kv_heads=(2,), modes=("fwd", "decode"), batch=2, head_dim=8,
                repeats=2, warmup=0, threads=1, device="cpu", dtype="float32", out=str(tmp_path),
                reference="none")  # fmt: skip
    return sweep.SweepConfig(**{**base, **kw})


def test_interleaved_ids_split_images_and_text_evenly():
    ids = workload.modality_ids(2, 16, 5, 2)
    assert ids.tolist()[0] == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 2, 2, 0, 0, 0]
    assert ids.shape == (2, 16) and torch.equal(ids[0], ids[1])
    with pytest.raises(ValueError, match=r"images=6 must be in \[1, n_visual=5\]"):
        workload.modality_ids(1, 16, 5, 6)


def test_cells_and_rows_say_the_layout(tmp_path):
    cfg = tiny_config(tmp_path, variants=("mmca", "gqa"), layout="interleaved", images=3)
    cells, _ = grid(cfg)
    by_name = {(c.choice.name, c.mode): c for c in cells}
    assert (by_name["mmca", "fwd"].layout, by_name["mmca", "fwd"].n_images) == ("interleaved", 3)
    assert (by_name["gqa", "fwd"].layout, by_name["gqa", "fwd"].n_images) == ("prefix", 0)  # text only
    prefix, _ = grid(tiny_config(tmp_path, variants=("mmca",)))
    assert prefix[0].key() != by_name["mmca", "fwd"].key()  # both layouts can share one CSV
    df = sweep.run(cfg)
    assert set(df["status"]) == {"ok"}
    mm = df[df["variant"] == "mmca"]
    assert set(mm["layout"]) == {"interleaved"} and set(mm["n_images"]) == {3} and set(mm["n_visual"]) == {4}
    assert row_key(mm.iloc[0].to_dict()) in {c.key() for c in cells}  # resume finds the row


def test_a_bad_layout_is_refused():
    with pytest.raises(ValueError, match=r"layout='zigzag' is not one of \['prefix', 'interleaved'\]"):
        sweep.SweepConfig(layout="zigzag")
    with pytest.raises(ValueError, match="unknown layout 'zigzag'"):
        workload.build("mmca", av.AttnSpec(32, 4, 2), "fwd", batch=1, seq_len=8, n_visual=2, layout="zigzag")


@pytest.mark.parametrize("variant", ["mmca", "concat"])
def test_interleaved_decode_workload_repeats_its_step(variant):
    spec = av.AttnSpec(32, 4, 2)
    w = workload.build(
        variant, spec, "decode", batch=2, seq_len=20, n_visual=6, layout="interleaved", images=2
    )
    out = w.step()
    assert out.shape == (2, 1, 32)
    assert_close(w.step(), out)


def test_interleaved_forward_is_mmca_on_those_ids():
    spec = av.AttnSpec(32, 4, 2)
    w = workload.build("mmca", spec, "fwd", batch=2, seq_len=20, n_visual=6, layout="interleaved", images=2)
    ids = workload.modality_ids(2, 20, 6, 2)
    x = torch.randn(2, 20, 32)
    with torch.no_grad():
        assert_close(w.module(x, modality=ids), av.mmca.reference(w.module, x, modality=ids))


def test_cli_refuses_a_bad_layout_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(
        app, ["sweep", "--profile", "ci", "--layout", "zigzag", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert result.output.strip() == "error: [sweep] layout='zigzag' is not one of ['prefix', 'interleaved']"
