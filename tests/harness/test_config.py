from dataclasses import dataclass
from typing import Literal

import pytest

from harness import config


@dataclass(frozen=True)
class Demo:
    seq_len: tuple[int, ...] = (128,)
    dtype: Literal["float32", "bfloat16"] = "float32"
    repeats: int = 10
    tolerance: float = 0.15
    out: str = "results"
    seed: int | None = None


def write(tmp_path, text):
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


def test_defaults_then_section_then_profile_then_overrides(tmp_path):
    path = write(
        tmp_path,
        """
[demo]
seq_len = [64, 128]
repeats = 5
[profiles.quick.demo]
repeats = 3
tolerance = 1
""",
    )
    assert config.load(Demo, "demo", path=path) == Demo(seq_len=(64, 128), repeats=5)
    quick = config.load(
        Demo, "demo", path=path, profile="quick", overrides={"dtype": "bfloat16", "out": None}
    )
    assert quick == Demo(seq_len=(64, 128), repeats=3, tolerance=1.0, dtype="bfloat16")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[demo]\nrepeat = 3\n", r"unknown key\(s\) \['repeat'\] in \[demo\]; valid keys"),
        ("[demo]\nrepeats = '3'\n", r"\[demo\] repeats='3' must be of type int"),
        ("[demo]\ndtype = 'fp8'\n", r"\[demo\] dtype='fp8' is not one of \['float32', 'bfloat16'\]"),
        ("[demo]\nseq_len = 128\n", r"\[demo\] seq_len=128 must be a list"),
        ("[demo]\nseq_len = [1, 'x']\n", r"seq_len='x' must be of type int"),
        ("[demo\n", "is not valid TOML"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        config.load(Demo, "demo", path=write(tmp_path, text))


def test_unknown_profile_and_missing_file(tmp_path):
    path = write(tmp_path, "[profiles.quick.demo]\nrepeats = 1\n")
    with pytest.raises(ValueError, match=r"unknown profile 'slow'; valid profiles: \['quick'\]"):
        config.load(Demo, "demo", path=path, profile="slow")
    with pytest.raises(ValueError, match="does not exist"):
        config.load(Demo, "demo", path=tmp_path / "missing.toml")


def test_optional_field_accepts_value_and_rejects_wrong_type():
    assert config.build(Demo, {"seed": 3}).seed == 3
    with pytest.raises(ValueError, match="seed"):
        config.build(Demo, {"seed": "three"})


def test_plugins_add_up_from_the_top_level_the_table_and_the_flags(tmp_path):
    from harness.check.ratios import CheckConfig
    from harness.sweep.config import SweepConfig

    path = tmp_path / "bench.toml"
    path.write_text('plugins = ["a", "my/b.py"]\n[check]\nplugins = ["c"]\n[sweep]\nrepeats = 3\n')
    check = config.load(CheckConfig, "check", path=path, overrides={"plugins": ["d", "a"]})
    assert check.plugins == ("a", "my/b.py", "c", "d")
    assert config.load(SweepConfig, "sweep", path=path).plugins == ("a", "my/b.py")
    path.write_text('plugins = "a"\n')
    with pytest.raises(ValueError, match=r"plugins='a' must be a list"):
        config.load(SweepConfig, "sweep", path=path)
