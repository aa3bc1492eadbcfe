from typer.testing import CliRunner

import attn_variants as av
from attn_variants import GroupedQueryAttention
from harness.cli import app

runner = CliRunner()


def test_list_prints_every_variant_with_paper():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in av.names():
        assert name in result.output
    assert "2305.13245" in result.output  # the GQA paper


def test_list_fits_an_80_column_terminal():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80
    assert all(f"│ {name} " in result.output for name in av.names())  # names whole, never folded


def test_help_works():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "list" in result.output


def test_unknown_command_exits_2():
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2


def test_list_prints_registry_text_verbatim_not_as_markup(temp_variant):
    temp_variant(GroupedQueryAttention, description="[v; t] [b]x[/b]")
    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "[v; t] [b]x[/b]" in result.output
