"""Report labels of a variant whose g means nothing (mla): its cache as GQA heads."""

import pandas as pd

from reports.load import cache_label, with_labels


def test_mla_rows_are_labelled_by_their_cache_and_gqa_rows_by_g():
    df = pd.DataFrame(
        {
            "variant": ["mla", "gqa", "gqa"],
            "options": ["", "", ""],
            "n_heads": [8, 8, 8],
            "n_kv_heads": [8, 2, 4],
            "kv_heads_equiv": [2.25, 2.0, 4.0],
        }
    )
    labels = list(with_labels(df, run=False)["label"])
    assert labels == ["mla (≡2.25 KV heads)", "gqa g=2", "gqa g=4"]


def test_cache_label_without_a_g_part_follows_the_name():
    assert cache_label("mla · run-a", 8, 2.25) == "mla (≡2.25 KV heads) · run-a"
    assert cache_label("mla(kv_lora_rank=64) h=4 g=4", 4, 4.5) == "mla(kv_lora_rank=64) h=4 (≡4.5 KV heads)"
