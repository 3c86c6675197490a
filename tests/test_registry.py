"""Methods, models, datasets and presets come from their entry-point groups, plugins included;
one generic table serves all four (docs/extending.md)."""

import os
import subprocess
import sys
import textwrap
from importlib.resources import files

import pytest
import torch

from benchsuite.cli.app import broken_plugins
from benchsuite.core import method as method_module
from benchsuite.core.registry import Registry, UnknownName, discover
from benchsuite.data.base import DataError, dataset_registry, load_dataset, options
from benchsuite.execution.grid import resolve_preset
from benchsuite.models import build_model, list_models, model_registry
from benchsuite.presets import list_presets, load_preset, preset_registry

BUILTIN = {"dense", "imp", "bimp", "oneshot", "random", "snip", "set", "rigl"}

PLUGIN = '''
from dataclasses import dataclass
from benchsuite.core.method import PruningMethod, hparam
from benchsuite.pruning.masks import HardMasks, global_magnitude_masks, keep_count


@dataclass(frozen=True)
class Hp:
    when: int = hparam(1, "chosen here: test plugin")


class EarlyPrune(PruningMethod):
    """Prunes to the target once, at the end of epoch `when`."""

    name = "earlyprune"
    source = "test plugin"
    Hparams = Hp

    def on_epoch_end(self, state):
        if state.epoch == self.hp.when:
            masks = state.hard_masks()
            n = sum(p.numel() for p in masks.params)
            keep = keep_count(n, self.target)
            masks.set(global_magnitude_masks(masks.params, keep), state.optimizer)
'''


def make_plugin(root, name, module_src, target):
    pkg = root / f"{name}_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "method.py").write_text(textwrap.dedent(module_src))
    info = root / f"{name}_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[benchsuite.methods]\n{name} = {name}_pkg.method:{target}\n"
    )


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    make_plugin(tmp_path, "earlyprune", PLUGIN, "EarlyPrune")
    make_plugin(tmp_path, "broken", "raise ImportError('missing dependency xyz')\n", "Nope")
    monkeypatch.syspath_prepend(str(tmp_path))
    method_module.method_registry.cache_clear()
    yield tmp_path
    method_module.method_registry.cache_clear()


def test_builtin_methods_register_through_entry_points():
    found = discover(Registry("method", method_module.METHODS_GROUP, method_module._check_method))
    assert BUILTIN <= set(found.entries)
    assert {found.sources[m] for m in BUILTIN} == {"benchsuite"}


def test_plugin_is_discovered_and_broken_one_reported(plugins):
    found = method_module.method_registry()
    assert found.entries["earlyprune"].__name__ == "EarlyPrune"
    assert found.sources["earlyprune"] == "earlyprune-pkg"
    (broken,) = [b for b in found.broken if b.name == "broken"]
    assert "missing dependency xyz" in broken.error
    assert BUILTIN <= set(found.entries)  # a broken plugin never hides the others


TOY = """
import torch.nn as nn
from benchsuite.data.base import dataset_registry
from benchsuite.data.builtin import synthetic


def toy_model(num_classes, input_shape, *, depth="1"):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def toy_data(data_dir, split_seed, val_fraction, *, n=64):
    return synthetic(data_dir, split_seed, val_fraction, n=n, n_test=16, shape=(1, 4, 4))


def toy_preset():
    return {"description": "toy", "dataset": "toy-data", "model": "toy-2", "epochs": 2,
            "batch_size": 8, "optimizer": {"lr": 0.1}, "schedule": {"kind": "constant"}}


NOT_A_LOADER = 3
"""


@pytest.fixture
def kinds(tmp_path, monkeypatch):
    """A plugin distribution with a model template, a dataset, presets (a function, a packaged
    TOML file) and two broken entries."""
    pkg = tmp_path / "toykinds"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(TOY))
    (pkg / "toy-file.toml").write_text(
        files("benchsuite.presets").joinpath("digits.toml").read_text()
    )
    info = tmp_path / "toykinds-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toykinds\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[benchsuite.models]\ntoy-<depth> = toykinds:toy_model\n"
        "[benchsuite.datasets]\ntoy-data = toykinds:toy_data\nbad-data = toykinds:NOT_A_LOADER\n"
        "[benchsuite.presets]\ntoy = toykinds:toy_preset\ntoy-file = toykinds\n"
        "missing-file = toykinds\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    tables = (model_registry, dataset_registry, preset_registry)
    for table in tables:
        table.cache_clear()
    yield
    for table in tables:
        table.cache_clear()


def test_models_datasets_and_presets_come_from_plugins(kinds):
    assert model_registry().sources["toy-<depth>"] == "toykinds"
    assert "lenet5" in list_models() and "toy-<depth>" in list_models()
    assert build_model("toy-3", 5, (1, 4, 4))(torch.zeros(2, 1, 4, 4)).shape == (2, 5)
    data = load_dataset("toy-data", n=32)
    assert data.n_train + data.n_val == 32 and options(dataset_registry().get("toy-data")) == {"n"}
    preset = load_preset("toy")
    assert (preset.name, preset.dataset, preset.model) == ("toy", "toy-data", "toy-2")
    assert load_preset("toy-file") == load_preset("digits").replace(name="toy-file")
    assert resolve_preset("toy", dataset=None, model=None, epochs=None) == preset
    broken = {b.name: b for b in broken_plugins()}
    assert "not a callable loader" in broken["bad-data"].error
    assert broken["bad-data"].group == "benchsuite.datasets"
    assert "no file" in broken["missing-file"].error
    with pytest.raises(DataError, match="its plugin failed to load: TypeError"):
        load_dataset("bad-data")
    assert {"toy", "toy-file", "digits"} <= set(list_presets())


def test_every_shipped_preset_file_is_registered():
    folder = files("benchsuite.presets").iterdir()
    shipped = {p.name.removesuffix(".toml") for p in folder if p.name.endswith(".toml")}
    registered = {n for n in list_presets() if preset_registry().sources[n] == "benchsuite"}
    assert shipped == registered


def test_a_table_registers_gets_and_names_the_choices():
    table = Registry("widget", "benchsuite.widgets", lambda name, entry: entry)
    table.register("b", 2)
    table.register("a", 1, source="mine")
    table.register("w-<x>-<y>", lambda *, x, y: (x, y))
    assert table.names() == ["a", "b", "w-<x>-<y>"] and table.sources["a"] == "mine"
    assert table.get("a") == 1 and table.get("w-1-2-3")() == ("1", "2-3")
    with pytest.raises(ValueError, match="widget 'a' is already registered by mine"):
        table.register("a", 3)
    with pytest.raises(UnknownName) as info:
        table.get("w-1")
    assert str(info.value) == "unknown widget 'w-1'; choose from a, b, w-<x>-<y>"
    with pytest.raises(UnknownName, match="'w-<x>-<y>' is a template: fill in each <field>"):
        table.get("w-<x>-<y>")


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(UnknownName, match="choose from .*bimp.*dense.*imp"):
        method_module.get_method("nosuch")


def cli(args, env_path=None, cwd=None):
    env = dict(os.environ)
    if env_path:
        env["PYTHONPATH"] = f"{env_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "benchsuite.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.slow
def test_plugin_appears_in_methods_and_runs(plugins, tmp_path):
    listing = cli(["methods"], plugins)
    assert listing.returncode == 0, listing.stderr
    assert "earlyprune" in listing.stdout and "earlyprune-pkg" in listing.stdout
    assert "broken" in listing.stderr + listing.stdout  # reported, skipped
    uri = f"sqlite:///{tmp_path}/m.db"
    done = cli(
        [
            "run",
            "--methods",
            "earlyprune",
            "--sparsity",
            "0.8",
            "--epochs",
            "2",
            "--tracking-uri",
            uri,
        ],
        plugins,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("digits-2ep").experiment_id
    (run,) = client.search_runs([exp_id], filter_string="tags.`benchsuite.kind` = 'run'")
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "earlyprune"
    assert run.data.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
