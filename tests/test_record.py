"""The run record: one module imports MLflow, and what is written is what the readers find."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from benchsuite.core.record import TAG, Artifacts, Kinds, Metrics, Params, Tags
from benchsuite.store.tracking import Reader, Tracker

ROOT = Path(__file__).resolve().parent.parent
MLFLOW_IMPORT = re.compile(r"^\s*(import mlflow|from mlflow)", re.MULTILINE)


def test_only_the_store_imports_mlflow() -> None:
    sources = [
        p
        for folder in ("benchsuite", "methods", "benchmarks")
        for p in sorted((ROOT / folder).rglob("*.py"))
    ]
    assert len(sources) > 20
    importers = [str(p.relative_to(ROOT)) for p in sources if MLFLOW_IMPORT.search(p.read_text())]
    assert importers == ["benchsuite/store/sqlite.py", "benchsuite/store/tracking.py"]


@pytest.mark.integration  # a real MLflow store
def test_the_reader_reads_what_the_writer_wrote(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp")
    run = tracker.start_run(
        "a", {Params.METHOD: "gmp", Params.SEED: 0}, {Tags.KIND: Kinds.RUN, Tags.RUN_KEY: "k1"}
    )
    run.log_metrics({Metrics.TEST_ACCURACY: 91.5}, step=3)
    run.log_json(Artifacts.LAYER_SPARSITY, {"fc1": 1.0})
    run.end("FINISHED")
    tracker.start_run("b", {}, {Tags.KIND: Kinds.THROUGHPUT}).end("FAILED", "boom")

    reader = Reader(uri)
    assert reader.experiments() == ["exp"] and reader.newest_experiment() == "exp"
    runs = {r.run_id: r for r in reader.runs("exp")}
    assert [r.run_id for r in tracker.runs()] == [r.run_id for r in reader.runs("exp")]
    rec = runs[run.run_id]
    assert (rec.method, rec.seed, rec.kind, rec.run_key, rec.finished) == (
        "gmp",
        0,
        "run",
        "k1",
        True,
    )
    assert rec.metrics == {Metrics.TEST_ACCURACY: 91.5} and rec.experiment == "exp"
    assert not any(k.startswith("mlflow.") for k in rec.tags)
    (failed,) = [r for r in runs.values() if r.kind == Kinds.THROUGHPUT]
    assert failed.status == "FAILED" and failed.tag(Tags.ERROR) == "boom"
    assert failed.tags[TAG + Tags.ERROR] == "boom"
    assert reader.read_json(run.run_id, Artifacts.LAYER_SPARSITY) == {"fc1": 1.0}
    assert reader.read_json(failed.run_id, Artifacts.LAYER_SPARSITY) is None
    assert tracker.finished() == {"k1": {"run_id": run.run_id, Metrics.TEST_ACCURACY: 91.5}}
    assert [r.run_id for r in tracker.runs_of("k1")] == [run.run_id]


@pytest.mark.integration  # a real MLflow store
def test_sparse_inference_loads_an_experiments_models(tmp_path: Path) -> None:
    """benchmarks/sparse_inference.py finds each run's model artifact through the reader."""
    from safetensors.torch import save_file

    from benchsuite.models import build_model

    spec = importlib.util.spec_from_file_location(
        "sparse_inference", ROOT / "benchmarks" / "sparse_inference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    torch.manual_seed(0)
    model = build_model("lenet5", 10, (1, 28, 28))
    path = tmp_path / Artifacts.MODEL
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    run = Tracker(uri, "exp").start_run(
        "gmp",
        {
            Params.METHOD: "gmp",
            Params.VARIANT: "default",
            Params.TARGET_SPARSITY: 0.9,
            Params.DATASET: "fashion-mnist",
            Params.MODEL: "lenet5",
        },
        {Tags.KIND: Kinds.RUN},
    )
    run.log_metrics({Metrics.THEORETICAL_SPEEDUP: 4.0})
    run.log_file(path)
    run.end("FINISHED")
    ((label, loaded, shape, speedup),) = list(module.models_from_experiment(uri, "exp", 5))
    assert (label, shape, speedup) == ("gmp@0.9", (1, 28, 28), 4.0)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def names(namespace: type) -> set[str]:
    return {v for k, v in vars(namespace).items() if k.isupper()}


@pytest.mark.integration
def test_a_recorded_run_uses_only_the_records_names(tmp_path: Path, tiny_preset, tiny_data) -> None:
    """Every param, metric, tag and artifact a run writes is named in record.py (a name
    written elsewhere and nowhere here would be a metric the readers cannot know)."""
    from benchsuite.training.loop import RunConfig
    from benchsuite.training.runner import execute

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = RunConfig(tiny_preset.replace(epochs=1), "dense", 0.0, 0)
    assert execute(config, Tracker(uri, "exp"), dataset=tiny_data, command="test")[0] == "FINISHED"
    reader = Reader(uri)
    (run,) = reader.runs("exp")
    assert {p for p in run.params if not p.startswith(Params.HP)} <= names(Params)
    assert set(run.metrics) <= names(Metrics)
    assert {Metrics.TEST_ACCURACY, Metrics.SPARSITY, Metrics.TRAIN_COST} <= set(run.metrics)
    tags = {t.removeprefix(TAG) for t in run.tags}
    assert all(t.startswith(TAG) for t in run.tags)
    assert {t for t in tags if not t.startswith(Tags.NUMERICS)} <= names(Tags)
    assert reader.read_json(run.run_id, Artifacts.LAYER_SPARSITY)
    with_model = reader.download(run.run_id, Artifacts.MODEL, tmp_path)
    assert with_model.name == Artifacts.MODEL and with_model.stat().st_size > 0
