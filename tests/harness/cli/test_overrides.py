"""The CLI builds a command's overrides from its parameters by field name (harness/cli/app.py)."""

import dataclasses

import pytest
import typer.main

from harness.accuracy.config import AccuracyConfig
from harness.check.ratios import CheckConfig
from harness.cli import app
from harness.cli.app import overrides
from harness.conform import ConformConfig
from harness.decide import DecideConfig
from harness.generate.run import GenerateConfig
from harness.sweep.config import SweepConfig


def options(command: str) -> set[str]:
    return {p.name for p in typer.main.get_command(app).commands[command].params}


@pytest.mark.parametrize(
    ("command", "cls", "extra"),
    [
        ("sweep", SweepConfig, {"profile", "config", "resume", "no_report"}),
        ("accuracy", AccuracyConfig, {"profile", "config", "no_report"}),
        ("check", CheckConfig, {"profile", "config", "update_baseline", "plan"}),
        ("generate", GenerateConfig, {"profile", "config", "no_report"}),
        ("decide", DecideConfig, {"run_dirs", "config"}),
        ("conform", ConformConfig, {"variants", "config"}),
    ],
)
def test_every_option_but_the_commands_own_is_a_settings_field(command, cls, extra):
    """An option named unlike its field would be dropped silently: none is."""
    assert options(command) - {f.name for f in dataclasses.fields(cls)} == extra


def test_overrides_split_lists_by_the_field_type_and_leave_other_parameters_out():
    params = {"seq_len": "128, 256", "modes": "fwd,decode", "batch": 2, "dtype": None, "profile": "quick"}
    assert overrides(SweepConfig, params) == {
        "seq_len": [128, 256],
        "modes": ["fwd", "decode"],
        "batch": 2,
        "dtype": None,
    }
    assert overrides(AccuracyConfig, {"heads": 4, "seeds": "0,1"}) == {"heads": 4, "seeds": [0, 1]}


def test_a_union_with_a_tuple_splits_and_a_path_becomes_text(tmp_path):
    """`batch: int | tuple[int, ...]` takes '8,32'; decide's `--out PATH` fills a str field."""
    assert overrides(SweepConfig, {"batch": "8,32"}) == {"batch": [8, 32]}
    assert overrides(DecideConfig, {"out": tmp_path, "tp": "1,8"}) == {"out": str(tmp_path), "tp": [1, 8]}


def test_a_bad_integer_list_names_its_flag():
    with pytest.raises(ValueError, match=r"--kv-heads '1,x' must be a comma-separated list of integers"):
        overrides(SweepConfig, {"kv_heads": "1,x"})


def test_a_repeatable_option_given_no_times_is_unset():
    """typer hands `--plugin` given no times as []: unset, so --resume does not see it as given."""
    assert overrides(SweepConfig, {"plugins": [], "seq_len": None}) == {"plugins": None, "seq_len": None}
