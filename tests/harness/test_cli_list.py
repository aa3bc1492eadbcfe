from typer.testing import CliRunner

import attn_variants as av
from harness.cli import app

runner = CliRunner()


def test_list_prints_every_variant_with_paper():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in av.names():
        assert name in result.output
    assert "2305.13245" in result.output  # the GQA paper


def test_help_works():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "list" in result.output


def test_unknown_command_exits_2():
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2
