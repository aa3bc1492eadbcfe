"""The sweep with outside variants: a variant declared `flops_on_meta=False` is counted on real
tensors (and the same code left on the meta device fails its cells, so the mark matters)."""

import attn_variants as av
from harness import sweep


class HostRead(av.GroupedQueryAttention):
    """GQA that checks its queries on the host: `bool()` of a meta tensor raises."""

    def attend(self, q, k, v, *, n_visual, cache):
        if not bool(q.isfinite().all()):
            raise ValueError("non-finite queries")
        return super().attend(q, k, v, n_visual=n_visual, cache=cache)


def run(tmp_path, variants):
    cfg = sweep.SweepConfig(variants=variants, reference="none", seq_len=(16,), heads=(4,), kv_heads=(2,),
                            modes=("fwd", "fwd_bwd"), batch=1, head_dim=8, repeats=2, warmup=0, threads=1,
                            device="cpu", out=str(tmp_path))  # fmt: skip
    return sweep.run(cfg).set_index(["variant", "mode"])


def test_flops_on_meta_false_counts_on_real_tensors(tmp_path, scratch_registry):
    av.register("_host_real", description="t", paper="-", flops_on_meta=False)(HostRead)
    av.register("_host_meta", description="t", paper="-")(HostRead)
    df = run(tmp_path, ("_host_real", "_host_meta", "gqa"))
    for mode in ("fwd", "fwd_bwd"):
        assert df.loc[("_host_real", mode), "status"] == "ok"
        assert df.loc[("_host_real", mode), "flops"] == df.loc[("gqa", mode), "flops"] > 0  # the same math
        assert df.loc[("_host_meta", mode), "status"] == "error"  # meta tensors have no value to read
