"""``benchsuite tune``: equal full-budget random search, scored on the finalized validation
accuracy, without ever reading the test split; ``run --tuned`` picks the result up."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from benchsuite.cli.app import app
from benchsuite.execution import grid
from benchsuite.execution.grid import Request
from benchsuite.presets import load_preset
from benchsuite.tuning.search import (
    TUNING_SEED,
    MethodSearch,
    draw_trials,
    search_space,
    tuning_bases,
)
from tests.local_ray import start_local_ray

EPOCHS = 4
STEPS = EPOCHS * 40  # digits: 1293 training images, batch 32


@pytest.fixture(scope="module")
def local_ray():
    ray = start_local_ray()
    yield
    ray.shutdown()


def test_search_space_comes_from_the_hparams_metadata() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    space = search_space("imp")
    assert isinstance(space["schedule"], Categorical)
    assert isinstance(space["phases"], Integer)
    assert (space["phases"].lower, space["phases"].upper) == (1, 6)  # randint's upper is open
    assert isinstance(space["retrain_fraction"], Float)
    assert "allr_last_phase_only" not in space  # no range, no choices: not tunable
    assert search_space("dense") == {}


def test_draws_are_reproducible_equal_per_method_and_fit_the_budget() -> None:
    """Each (method, target): the defaults first, then distinct draws; every configuration on
    every tuning seed (the same seeds for all)."""
    from benchsuite.data.base import load_dataset

    preset = load_preset("digits").replace(epochs=10)
    data = load_dataset("digits")
    request = Request(preset, ["imp", "bimp", "dense"], [0.9], [], {})
    configs, skipped = draw_trials(request, data, 5, seeds=2)
    again, _ = draw_trials(request, data, 5, seeds=2)
    assert configs == again
    assert skipped == ["dense"]
    per_method = defaultdict(list)
    for c in configs:
        per_method[c.method].append(c)
        assert not c.evaluate_test
    assert {m: len(v) for m, v in per_method.items()} == {"imp": 10, "bimp": 10}
    for trials in per_method.values():
        by_config = defaultdict(list)
        for c in trials:
            by_config[c.hparams].append(c.seed)
        assert len(by_config) == 5  # distinct configurations ...
        assert all(seeds == [TUNING_SEED, TUNING_SEED + 1] for seeds in by_config.values())
        assert trials[0].hparams == ()  # ... the defaults first
    # one method's draws do not depend on which other methods are tuned with it
    alone, _ = draw_trials(Request(preset, ["bimp"], [0.9], [], {}), data, 5, seeds=2)
    assert alone == per_method["bimp"]
    # at 4 epochs IMP's defaults (10 % retraining: 0 epochs) do not fit: five draws instead
    short = Request(preset.replace(epochs=EPOCHS), ["imp"], [0.9], [], {})
    drawn, _ = draw_trials(short, data, 5, seeds=1)
    assert len(drawn) == 5 and all(c.hparams != () for c in drawn)


def test_a_small_space_is_evaluated_whole() -> None:
    """DNW's only knob has three choices: three configurations, the defaults among them."""
    from benchsuite.data.base import load_dataset

    preset = load_preset("digits").replace(epochs=EPOCHS)
    configs, _ = draw_trials(Request(preset, ["dnw"], [0.9], [], {}), load_dataset("digits"), 6)
    assert sorted({dict(c.hparams).get("selection", "default") for c in configs}) == [
        "default",
        "global",
        "ignorefirst",
    ]


def test_the_search_suggests_the_drawn_trials_then_finishes() -> None:
    """What Tune runs is what ``draw_trials`` checked up front: each trial with its run key, the
    metric its score is reported under and its configuration's index, round robin over the
    methods."""
    from ray.tune.search import Searcher

    from benchsuite.core.budget import Budget
    from benchsuite.data.base import load_dataset

    preset = load_preset("digits").replace(epochs=10)
    data = load_dataset("digits")
    request = Request(preset, ["imp", "bimp"], [0.9], [], {})
    drawn, _ = draw_trials(request, data, 2, seeds=1, seed=3)
    bases, _ = tuning_bases(request)
    search = MethodSearch(bases, 2, Budget(10, 40), seeds=1, seed=3, key=lambda c: c.label())
    assert search.total == 4
    suggested = [search.suggest(f"t{i}")["run"] for i in range(4)]
    assert [run["config"] for run in suggested] == drawn
    assert [run["config"].method for run in suggested] == ["imp", "bimp", "imp", "bimp"]
    assert [run["index"] for run in suggested] == [0, 0, 1, 1]
    assert [run["score"] for run in suggested[:2]] == [
        "val_accuracy/imp@0.9",
        "val_accuracy/bimp@0.9",
    ]
    assert suggested[0]["key"] == drawn[0].label()
    assert search.suggest("t4") == Searcher.FINISHED


def test_selection_never_falls_below_the_defaults_on_validation() -> None:
    """The mean over the same tuning seeds decides; a tie or no gain keeps the defaults; a
    configuration with a failed seed cannot be chosen."""
    from benchsuite.tuning.search import choose

    base = tuning_bases(Request(load_preset("digits"), ["gmp"], [0.9], [], {}))[0][0]

    def config(index: int, *scores: float, hps: dict | None = None) -> dict:
        values = {str(1000 + j): v for j, v in enumerate(scores)}
        mean = sum(scores) / len(scores) if len(scores) == 2 else None
        return {"index": index, "hparams": hps or {}, "scores": values, "val_accuracy": mean}

    defaults = config(0, 80.0, 82.0)  # mean 81
    worse = config(1, 83.0, 78.0, hps={"ramp_end": 0.5})  # 80.5: one lucky seed is not enough
    tie = config(2, 81.5, 80.5, hps={"ramp_end": 0.6})  # 81: a tie keeps the defaults
    failed = config(3, 95.0, hps={"ramp_end": 0.7})  # one seed failed: not eligible
    better = config(4, 81.0, 81.4, hps={"ramp_end": 0.8})  # 81.2

    entry = choose(base, [defaults, worse, tie, failed], 2)
    assert (entry["chosen"], entry["hparams"], entry["val_accuracy"]) == (0, {}, 81.0)
    entry = choose(base, [defaults, worse, tie, failed, better], 2)
    assert (entry["chosen"], entry["hparams"]) == (4, {"ramp_end": 0.8})
    assert entry["val_accuracy"] >= entry["default_val_accuracy"] == 81.0
    assert (entry["trials"], entry["finished"]) == (10, 9)
    # the defaults failed: the best eligible configuration, still on the same seeds
    entry = choose(base, [config(0, 80.0), worse, better], 2)
    assert entry["chosen"] == 4 and entry["default_val_accuracy"] is None


@pytest.mark.slow
def test_tune_then_run_tuned(local_ray, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    real_load = grid.load_data

    def no_test_split(preset, data_dir):
        """The driver ships this dataset to every trial: reading its test split fails the run."""
        data = real_load(preset, data_dir)
        data._load_test = lambda: (_ for _ in ()).throw(RuntimeError("test split read"))
        return data

    monkeypatch.setattr(grid, "load_data", no_test_split)
    result = CliRunner().invoke(
        app,
        [
            "tune",
            "--methods",
            "gmp,dpf",
            "--sparsity",
            "0.9",
            "--trials-per-method",
            "2",
            "--tuning-seeds",
            "2",
            "--epochs",
            str(EPOCHS),
        ],
    )
    assert result.exit_code == 0, result.output
    monkeypatch.setattr(grid, "load_data", real_load)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")  # absolute: stores are cached
    exp = client.get_experiment_by_name(f"digits-{EPOCHS}ep-tune")
    trials = client.search_runs([exp.experiment_id], max_results=100)
    by_method = defaultdict(list)
    for run in trials:
        by_method[run.data.params["method"]].append(run)
    assert {m: len(v) for m, v in by_method.items()} == {"gmp": 4, "dpf": 4}
    for runs in by_method.values():
        assert sorted(int(r.data.params["seed"]) for r in runs) == [1000, 1000, 1001, 1001]
    for run in trials:
        assert run.info.status == "FINISHED"  # none read the test split (it would have failed)
        assert run.data.tags["benchsuite.kind"] == "tune"
        assert run.data.metrics["train_steps"] == STEPS  # full budget, no early stopping
        assert "test_accuracy" not in run.data.metrics
        assert "test_top5" not in run.data.metrics

    saved = json.loads((tmp_path / f".benchsuite/tuned/digits-{EPOCHS}ep.json").read_text())
    for method, runs in by_method.items():
        entry = saved["methods"][method]["0.9"]
        assert (entry["trials"], entry["finished"]) == (4, 4)
        # a configuration's score: the mean over the tuning seeds of the finalized model's
        # validation accuracy (the value logged last)
        finals = {}
        for run in runs:
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            last = max(history, key=lambda m: (m.step, m.timestamp))
            assert run.data.metrics["val_accuracy"] == last.value
            finals[run.info.run_id] = last.value
        for config in entry["configs"]:
            scores = [finals[config["runs"][seed]] for seed in ("1000", "1001")]
            assert config["val_accuracy"] == pytest.approx(sum(scores) / 2)
        best = max(c["val_accuracy"] for c in entry["configs"])
        assert entry["val_accuracy"] == best >= entry["default_val_accuracy"]
        assert entry["configs"][0]["hparams"] == {}  # the defaults were a candidate

    # a re-run resumes: every trial already FINISHED, its score read back, the same choice
    tune_args = [
        "tune",
        "--methods",
        "gmp,dpf",
        "--sparsity",
        "0.9",
        "--trials-per-method",
        "2",
        "--tuning-seeds",
        "2",
        "--epochs",
        str(EPOCHS),
    ]
    again = CliRunner().invoke(app, tune_args)
    assert again.exit_code == 0, again.output
    assert "0 finished, 0 failed, 8 skipped (already finished)" in " ".join(again.stdout.split())
    resaved = json.loads((tmp_path / f".benchsuite/tuned/digits-{EPOCHS}ep.json").read_text())
    assert resaved["methods"] == saved["methods"]
    assert len(client.search_runs([exp.experiment_id], max_results=100)) == 8  # none redone

    result = CliRunner().invoke(
        app,
        [
            "run",
            "--in-process",
            "--methods",
            "dense,gmp,dpf",
            "--sparsity",
            "0.9",
            "--epochs",
            str(EPOCHS),
            "--tuned",
        ],
    )
    assert result.exit_code == 0, result.output
    exp = client.get_experiment_by_name(f"digits-{EPOCHS}ep")
    kind_run = "tags.`benchsuite.kind` = 'run'"
    final = {r.data.params["method"]: r for r in client.search_runs([exp.experiment_id], kind_run)}
    assert final["dense"].data.tags["benchsuite.tuned"] == "false"
    for method in ("gmp", "dpf"):
        run = final[method]
        assert run.data.tags["benchsuite.tuned"] == "true"
        assert int(run.data.params["seed"]) < TUNING_SEED
        assert "test_accuracy" in run.data.metrics
        for name, value in saved["methods"][method]["0.9"]["hparams"].items():
            assert run.data.params[f"hp.{name}"] == str(value)

    # the board says how its rows were tuned and publishes the configurations; rerunning from
    # the published file asks for the very same runs (all already finished)
    out = tmp_path / "boards"
    published = CliRunner().invoke(
        app, ["publish", "--experiment", f"digits-{EPOCHS}ep", "--out", str(out)]
    )
    assert published.exit_code == 0, published.output
    md = (out / f"digits-{EPOCHS}ep.md").read_text()
    assert "## Tuning" in md and "dense: no tunable hyperparameters" in md
    firsts = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ")]
    assert {"| gmp (tuned)", "| dpf (tuned)"} <= set(firsts)  # the board's rows, one per method
    assert {"| gmp", "| dpf"} <= set(firsts)  # the tuning section's rows
    configs = out / f"digits-{EPOCHS}ep.configs.json"
    assert json.loads(configs.read_text())["methods"] == saved["methods"]
    rerun = CliRunner().invoke(
        app,
        [
            "run",
            "--in-process",
            "--methods",
            "dense,gmp,dpf",
            "--sparsity",
            "0.9",
            "--epochs",
            str(EPOCHS),
            "--tuned-configs",
            str(configs),
            "--no-throughput",
        ],
    )
    assert rerun.exit_code == 0, rerun.output
    assert "0 finished, 0 failed, 3 skipped (already finished)" in " ".join(rerun.stdout.split())


def test_run_tuned_without_a_tuning_result_is_bad_input(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--methods", "imp", "--epochs", "4", "--tuned"])
    assert result.exit_code == 2
    assert "--tuned: no tuned configuration" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_a_calibrated_knob_is_fixed_not_searched() -> None:
    """STR's and DST's calibrated penalty, CS's λ land them on the target: tuning them on
    validation accuracy would trade sparsity for accuracy, so only the other knobs are drawn."""
    from benchsuite.data.base import load_dataset
    from benchsuite.tuning.search import describe_space, tunable_space

    preset = load_preset("fashion-mnist")
    assert set(preset.calibrated("cs", 0.9)) == {"s_initial", "penalty"}
    assert set(tunable_space("cs", preset, 0.9)) == {"beta_final"}
    assert describe_space("cs", preset, 0.9) == {"beta_final": "log-uniform real in [50, 1000]"}
    assert tunable_space("str", preset, 0.9) == {} and tunable_space("dst", preset, 0.98) == {}
    assert set(tunable_space("gmp", preset, 0.9)) == set(search_space("gmp"))  # not calibrated

    small = preset.replace(epochs=2)
    request = Request(small, ["str", "cs", "dst"], [0.9], [], {})
    bases, skipped = tuning_bases(request)
    assert [b.method for b in bases] == ["cs"] and skipped == ["str", "dst"]
    drawn, _ = draw_trials(
        Request(load_preset("digits").replace(epochs=EPOCHS), ["cs"], [0.9], [], {}),
        load_dataset("digits"),
        2,
    )
    assert {k for c in drawn for k, _ in c.hparams} == set(search_space("cs"))  # none calibrated


def test_run_tuned_refuses_hp_overrides(tmp_path, monkeypatch) -> None:
    """A tuned row is the tuning's choice per target; an override would hide inside it."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["run", "--methods", "gmp", "--epochs", "4", "--tuned", "--hp", "gmp.ramp_end=0.5"]
    )
    assert result.exit_code == 2
    assert "--hp with --tuned" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_a_tuned_file_for_another_budget_is_refused(tmp_path) -> None:
    """--tuned-configs names any file: its values hold only for the budget they were tuned on."""
    from benchsuite.core.errors import BadInput
    from benchsuite.tuning.search import load_tuned

    preset = load_preset("digits").replace(epochs=EPOCHS)
    path = tmp_path / "tuned.json"
    entry = {"hparams": {"phases": 2}}
    path.write_text(
        json.dumps(
            {
                "dataset": preset.dataset,
                "model": preset.model,
                "epochs": 20,
                "data": "0123456789abcdef",
                "methods": {"imp": {"0.9": entry}},
            }
        )
    )
    with pytest.raises(BadInput, match="was tuned for epochs 20, not 4"):
        load_tuned(preset, ["imp"], [0.9], path=path)
    path.write_text(path.read_text().replace('"epochs": 20', f'"epochs": {EPOCHS}'))
    assert load_tuned(preset, ["imp"], [0.9], path=path) == {"imp": {"0.9": {"phases": "2"}}}
