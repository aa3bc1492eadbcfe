"""Outside variants: entry points of group attnbench.variants, modules and .py files given by
name (attn_variants/plugins.py); a broken plugin is one error naming it and leaves the registry
as it was."""

import textwrap

import pytest
import torch

import attn_variants as av
from attn_variants import plugins
from attn_variants.plugins import PluginError

GOOD = """
import attn_variants as av

@av.register("{name}", description="a test variant", paper="https://example.org", options={{"k": 1}})
class Good(av.GroupedQueryAttention):
    def __init__(self, spec, *, backend="sdpa", k=1):
        super().__init__(spec, backend=backend)
"""


def write(folder, module, text):
    path = folder / f"{module}.py"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_file_plugin_registers_with_its_origin(tmp_path, scratch_registry):
    path = write(tmp_path, "plug_file", GOOD.format(name="_plug_file"))
    assert plugins.load(str(path)) == ("_plug_file",)
    assert "_plug_file" in av.names()
    assert av.info("_plug_file").origin == f"file {path.resolve()}"
    assert av.create("_plug_file", av.AttnSpec(16, 2), k=3)(torch.randn(1, 3, 16)).shape == (1, 3, 16)
    assert plugins.load(str(path)) == ("_plug_file",)  # a second load does nothing


def test_a_module_plugin_by_name(tmp_path, monkeypatch, scratch_registry):
    write(tmp_path, "plug_by_name", GOOD.format(name="_plug_mod"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugins.load_all(["plug_by_name"]) == ("_plug_mod",)
    assert av.info("_plug_mod").origin == "module plug_by_name"
    assert av.info("gqa").origin == "built in"


def test_the_registry_is_restored_after_the_fixture(tmp_path):
    path = write(tmp_path, "plug_gone", GOOD.format(name="_plug_gone"))
    with av.registry.restored():
        plugins.load(str(path))
        assert "_plug_gone" in av.names()
    assert "_plug_gone" not in av.names()
    with av.registry.restored():  # loaded again, it registers again
        assert plugins.load(str(path)) == ("_plug_gone",)


@pytest.mark.parametrize(
    "text, message",
    [
        ("import no_such_dependency_xyz\n", r"cannot be imported: ModuleNotFoundError: No module named"),
        ("raise RuntimeError('boom')\n", r"failed on import: RuntimeError: boom"),
        ("def broken(:\n", r"cannot be imported: SyntaxError"),
        (GOOD.format(name="gqa"), r"variant 'gqa' is already registered \(built in\)"),
        (GOOD.format(name="a:b"), r"variant name 'a:b' must match"),
        (GOOD.format(name="_p").replace('paper="https://example.org"', 'paper=""'), r"paper='' must be"),
        (
            GOOD.format(name="_p").replace("options=", 'modes=("train",), options='),
            r"modes \['train'\] are not",
        ),
        (
            GOOD.format(name="_p").replace("options=", 'causal_safe="yes", options='),
            r"causal_safe='yes' must be",
        ),
        (GOOD.format(name="_p") + GOOD.format(name="mha").replace("Good", "Good2"), r"'mha' is already"),
    ],
)
def test_a_broken_plugin_is_one_error_naming_it_and_undone(tmp_path, scratch_registry, text, message):
    path = write(tmp_path, "plug_broken", text)
    before = av.names()
    with pytest.raises(PluginError, match=message) as err:
        plugins.load(str(path))
    assert f"plugin {str(path.resolve())!r}" in str(err.value) and "\n" not in str(err.value)
    assert av.names() == before  # '_p', registered before the clash, is gone again
    assert av.create("gqa", av.AttnSpec(16, 2, 1))(torch.randn(1, 3, 16)).shape == (1, 3, 16)


def test_a_missing_module_or_file(scratch_registry):
    with pytest.raises(
        PluginError, match=r"plugin 'no_such_plugin_xyz' \(module no_such_plugin_xyz\): cannot"
    ):
        plugins.load("no_such_plugin_xyz")
    with pytest.raises(PluginError, match=r"no such file: nowhere/plug\.py"):
        plugins.load("nowhere/plug.py")


def fake_distribution(folder, name, entry_points):
    """An installed distribution as importlib.metadata sees one: a dist-info folder on sys.path."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{plugins.GROUP}]\n{lines}")


def test_installed_plugins_load_on_the_first_read(tmp_path, monkeypatch, scratch_registry):
    write(tmp_path, "plug_installed", GOOD.format(name="_plug_ep"))
    write(tmp_path, "plug_installed_broken", "raise ImportError('needs a GPU library')\n")
    fake_distribution(tmp_path, "plugdist", {"good": "plug_installed", "bad": "plug_installed_broken"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_installed_done", False)  # as in a fresh process
    assert "_plug_ep" in av.names()  # the first read imports every entry point
    assert av.info("_plug_ep").origin == "distribution plugdist 0.1"
    (line,) = plugins.errors()  # the broken one is recorded, the built-ins work
    assert "entry point bad = plug_installed_broken" in line and "needs a GPU library" in line
    assert av.create("gqa", av.AttnSpec(16, 2, 1)) is not None
    with pytest.raises(ValueError, match=r"unknown variant 'nope'.*needs a GPU library"):
        av.info("nope")


def test_registry_metadata_is_checked_for_built_in_code_too():
    with pytest.raises(ValueError, match=r"isolates_images=True needs multimodal=True"):
        av.register("_x", description="x", paper="x", isolates_images=True)
    with pytest.raises(ValueError, match=r"register decorates an nn.Module subclass"):
        av.register("_x", description="x", paper="x")(object)
    assert "_x" not in av.names()


def test_declared_cache_bytes_include_extra_statistics():
    spec = av.AttnSpec(64, 8, 4)
    assert av.info("gqa").cache_bytes_per_token(spec, {}, torch.float32) == 2 * 4 * 8 * 4
    assert av.info("kdgqa").cache_bytes_per_token(spec, {}, torch.bfloat16) == 2 * 4 * 8 * 2 + 8 * 4
