"""The runner records what the loop reports; the loop itself knows no tracking store."""

import ast
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import benchsuite.training.loop
from benchsuite.store.tracking import Tracker
from benchsuite.training.loop import RunConfig
from benchsuite.training.runner import execute, key_for


def test_the_loop_imports_no_tracking_store():
    tree = ast.parse(Path(benchsuite.training.loop.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and ("tracking" in m or "mlflow" in m or "ray" in m) for m in imported)


@pytest.mark.integration
def test_a_cached_prefix_is_recorded_in_full_and_reported_once(tmp_path, tiny_preset, tiny_data):
    """The second run of a shared dense prefix records every epoch's curve point (the cached
    ones replayed), but reports to ``on_epoch`` (Ray Tune, progress) only the epochs it ran:
    the prefix's last epoch end (its prune) onwards."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "exp")
    preset = tiny_preset.replace(epochs=6)
    hparams = (("phases", "3"), ("retrain_fraction", "0.5"))  # 3 dense epochs, then 3 phases
    reported = {}
    for target in (0.5, 0.9):
        config = RunConfig(preset, "imp", target, 0, hparams=hparams)
        reported[target] = []
        status, result, error = execute(
            config,
            tracker,
            dataset=tiny_data,
            cache_dir=tmp_path / "cache",
            on_epoch=reported[target].append,
        )
        assert status == "FINISHED", error
    assert result.tags["cached_dense"] == "true"
    assert [p.epoch for p in reported[0.5]] == [1, 2, 3, 4, 5, 6]
    assert [p.epoch for p in reported[0.9]] == [3, 4, 5, 6]
    assert not any(p.replayed for p in reported[0.9])
    client = MlflowClient(uri)
    curves = {}
    for target in (0.5, 0.9):
        config = RunConfig(preset, "imp", target, 0, hparams=hparams)
        (run,) = tracker.runs_of(key_for(config, tiny_data))
        history = client.get_metric_history(run.run_id, "val_accuracy")
        assert [h.step for h in history] == [14 * e for e in range(1, 7)] + [14 * 6]  # + final
        curves[target] = {(h.step, h.value) for h in history if h.step <= 14 * 2}
    assert curves[0.5] == curves[0.9]  # the replayed prefix, as the first run recorded it
