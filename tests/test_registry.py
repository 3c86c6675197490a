"""Methods come from the `benchsuite.methods` entry-point group, plugins included."""

import os
import subprocess
import sys
import textwrap

import pytest

from benchsuite import registry as reg

BUILTIN = {"dense", "imp", "bimp", "oneshot", "random", "snip", "set", "rigl"}

PLUGIN = '''
from dataclasses import dataclass
from benchsuite.method import PruningMethod, hparam
from benchsuite.sparsity import HardMasks, global_magnitude_masks, keep_count


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
    reg.registry.cache_clear()
    yield tmp_path
    reg.registry.cache_clear()


def test_builtin_methods_register_through_entry_points():
    found = reg.discover(reg.Registry("method", reg.GROUP, reg._check_method))
    assert BUILTIN <= set(found.entries)
    assert {found.sources[m] for m in BUILTIN} == {"benchsuite"}


def test_plugin_is_discovered_and_broken_one_reported(plugins):
    found = reg.registry()
    assert found.methods["earlyprune"].__name__ == "EarlyPrune"
    assert found.sources["earlyprune"] == "earlyprune-pkg"
    (broken,) = [b for b in found.broken if b.name == "broken"]
    assert "missing dependency xyz" in broken.error
    assert BUILTIN <= set(found.methods)  # a broken plugin never hides the others


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(reg.UnknownName, match="choose from .*bimp.*dense.*imp"):
        reg.get_method("nosuch")


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
