"""docs/extending.md's examples run as written; `--methods` patterns and `--preset PATH.toml`."""

from __future__ import annotations

import math
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchsuite.cli.app import app
from benchsuite.core.errors import BadInput
from benchsuite.core.method import get_method, list_methods, method_registry
from benchsuite.data.base import dataset_registry, load_dataset
from benchsuite.execution.grid import parse_methods, resolve_preset
from benchsuite.models import build_model, model_registry
from benchsuite.presets import PresetError, load_preset, preset_registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def fresh_tables():
    """Registrations made by a test vanish with it: the tables are discovered again."""
    tables = (method_registry, model_registry, dataset_registry, preset_registry)
    for table in tables:
        table.cache_clear()
    yield
    for table in tables:
        table.cache_clear()


def test_the_documented_examples_register_and_work(fresh_tables):
    namespace: dict = {}
    for code in blocks("python"):
        exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    # the method passes the registry's checks and is then selectable by name and pattern
    method_registry().register("prune-once", namespace["PruneOnce"])
    assert get_method("prune-once") is namespace["PruneOnce"]
    assert "prune-once" in parse_methods("prune-*")
    # the model and its template build; the dataset loads with its option
    torch.manual_seed(0)
    assert build_model("tiny-mlp", 3, (1, 4, 4))(torch.zeros(2, 1, 4, 4)).shape == (2, 3)
    assert namespace["model"][1].out_features == 64
    data = namespace["data"]
    assert (data.n_train + data.n_val, data.n_test, data.num_classes) == (400, 200, 2)
    assert load_dataset("blobs", n=400).fingerprint == data.fingerprint
    x, y = next(data.train_batches(16, torch.Generator(), torch.Generator(), "cpu"))
    assert build_model("tiny-mlp", 2, data.input_shape)(x).shape == (16, 2)
    # a registered model passes the command line's check
    preset = resolve_preset("digits", dataset="blobs", model="mlp-32", epochs=2)
    assert (preset.dataset, preset.model, preset.epochs) == ("blobs", "mlp-32", 2)


def test_the_documented_entry_points_use_the_four_groups():
    groups = {"benchsuite.methods", "benchsuite.models", "benchsuite.datasets"}
    groups.add("benchsuite.presets")
    for text in blocks("toml"):
        table = tomllib.loads(text)
        if "project" in table:
            assert set(table["project"]["entry-points"]) <= groups


def test_the_documented_preset_file_loads(tmp_path):
    (preset_text,) = [t for t in blocks("toml") if t.startswith("description")]
    path = tmp_path / "digits-mlp.toml"
    path.write_text(preset_text)
    preset = load_preset(str(path))
    assert (preset.name, preset.model, preset.epochs) == ("digits-mlp", "mlp", 6)


# --------------------------------------------------------------------------- --preset PATH


def test_a_copied_preset_file_loads_like_the_shipped_one(tmp_path, monkeypatch):
    text = files("benchsuite.presets").joinpath("fashion-mnist.toml").read_text()
    (tmp_path / "fashion-mnist.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert load_preset("fashion-mnist.toml") == load_preset("fashion-mnist")
    assert load_preset(str(tmp_path / "fashion-mnist.toml")) == load_preset("fashion-mnist")


OPTIMIZER = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}  # digits.toml's
SCHEDULE = {"kind": "multistep", "milestones": [0.5, 0.75], "gamma": 0.1}


def digits_table() -> dict:
    table = tomllib.loads(files("benchsuite.presets").joinpath("digits.toml").read_text())
    table.pop("calibration")
    return table


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read preset file"),
        ("description = ", "Invalid value"),
        ('description = "x"\ndataset = "digits"\n', "lacks model, epochs, batch_size"),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"epochs": 2.5}, "epochs must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"colour": 1}, "unknown key colour; expected "),
        ({"model": 3}, "model must be a string"),
        ({"optimizer": {"learning_rate": 0.1}}, "learning_rate"),
        ({"schedule": {"kind": "sawtooth"}}, "unknown schedule kind 'sawtooth'"),
        (
            {"schedule": {**SCHEDULE, "milestones": [1.5, -2]}},
            "schedule.milestones must be a list of increasing fractions of the schedule in "
            "(0, 1), e.g. [0.5, 0.75], got [1.5, -2]",
        ),
        ({"schedule": {**SCHEDULE, "milestones": [0.75, 0.5]}}, "got [0.75, 0.5]"),
        ({"schedule": {**SCHEDULE, "milestones": ["a"]}}, "schedule.milestones must be a list"),
        ({"schedule": {**SCHEDULE, "milestone": [0.5]}}, "unknown key schedule.milestone; "),
        ({"schedule": {**SCHEDULE, "step_size": 0.3}}, "schedule.step_size is not read by kind"),
        ({"schedule": {**SCHEDULE, "gamma": 0}}, "schedule.gamma must be a factor in (0, 1]"),
        ({"schedule": {**SCHEDULE, "warmup_epochs": 20}}, "warmup_epochs must be an integer in"),
        ({"schedule": {**SCHEDULE, "lr": 0.3}}, "schedule.lr 0.3 differs from optimizer.lr"),
        ({"schedule": {"kind": "step"}}, "kind 'step' needs schedule.step_size"),
        (
            {"optimizer": {**OPTIMIZER, "lr": math.nan}},
            "optimizer.lr must be a finite number > 0, got nan",
        ),
        ({"optimizer": {**OPTIMIZER, "lr": math.inf}}, "optimizer.lr must be a finite number"),
        ({"optimizer": {**OPTIMIZER, "lr": "fast"}}, "optimizer.lr must be a finite number > 0"),
        ({"optimizer": {**OPTIMIZER, "lr": -0.1}}, "got -0.1"),
        (
            {"optimizer": {**OPTIMIZER, "momentun": 0.9}},
            "unknown key optimizer.momentun; [optimizer] takes lr, momentum, weight_decay, "
            "nesterov",
        ),
        ({"optimizer": {**OPTIMIZER, "momentum": 1.0}}, "momentum must be a number in [0, 1)"),
        ({"optimizer": {**OPTIMIZER, "weight_decay": -1e-4}}, "weight_decay must be a finite"),
        ({"optimizer": {**OPTIMIZER, "nesterov": "yes"}}, "nesterov must be true or false"),
        ({"amp": "yes"}, "amp must be true or false"),
        ({"sources": {"lr": 1}}, "sources.lr must be a string"),
    ],
)
def test_a_bad_preset_file_is_one_line(tmp_path, content, needle):
    path = tmp_path / "mine.toml"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(_dump({**digits_table(), **content}))
    with pytest.raises(PresetError) as info:
        load_preset(str(path))
    message = str(info.value)
    assert "\n" not in message and needle in message, message


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        ('[calibration.stt."0.9"]\nx = 1', "calibration.stt: unknown method; choose from "),
        (
            '[calibration.str."0.90"]\ns_initial = -5.0',
            "calibration.str.0.90: a target must be a sparsity",
        ),
        (
            '[calibration.str."1.5"]\ns_initial = -5.0',
            "calibration.str.1.5: a target must be a sparsity",
        ),
        ('[calibration.str."0.9"]\ns_init = -5.0', "str has no hyperparameter 's_init'; choose"),
        ('[calibration.str."0.9"]\nweight_decay = "abc"', "weight_decay='abc': expected a"),
        ('[calibration.str."0.9"]\nweight_decay = nan', "calibration.str.0.9: weight_decay"),
    ],
)
def test_a_bad_calibration_is_one_line(tmp_path, block, needle):
    path = tmp_path / "mine.toml"
    path.write_text(_dump(digits_table()) + block + "\n")
    with pytest.raises(PresetError) as info:
        load_preset(str(path))
    assert "\n" not in str(info.value) and needle in str(info.value), str(info.value)


def test_every_shipped_preset_is_valid_and_unchanged():
    """The checks refuse nothing shipped, and a preset's table (hashed into every run key)
    is what it was: the fields as the TOML file gives them."""
    for name in preset_registry().names():
        preset = load_preset(name)
        table = tomllib.loads(files("benchsuite.presets").joinpath(f"{name}.toml").read_text())
        assert preset.optimizer.lr == table["optimizer"]["lr"]
        assert preset.schedule.milestones == tuple(table["schedule"].get("milestones", ()))
        assert preset.to_dict()["calibration"] == table.get("calibration", {})


def test_the_dump_helper_round_trips_a_valid_preset(tmp_path):
    path = tmp_path / "digits.toml"
    path.write_text(_dump(digits_table()))
    assert load_preset(str(path)) == load_preset("digits").replace(calibration={})


def _dump(table: dict) -> str:
    """Just enough TOML for a preset: top-level scalars, then one level of tables."""

    def value(v):
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for name, sub in table.items():
        if isinstance(sub, dict):
            lines += [f"[{name}]"] + [f'"{k}" = {value(v)}' for k, v in sub.items()]
    return "\n".join(lines) + "\n"


runner = CliRunner()


def run_cli(tmp_path, *args: str):
    db = tmp_path / "m.db"
    result = runner.invoke(app, ["run", *args, "--tracking-uri", f"sqlite:///{db}"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert not db.exists()
    return result.exit_code, lines


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--preset", "/nonexistent/mine.toml"], "--preset: cannot read preset file"),
        (["--preset", "nosuch"], "or give a PATH.toml"),
        (["--methods", "zz*"], "--methods: 'zz*' matches no budget-equal method; choose from all"),
        (["--methods", "imp-r*"], "(name imp-retrain exactly: not budget-equal)"),
        (["--model", "nosuch-net"], "--model: unknown model 'nosuch-net'; choose from "),
        (["--model", "wrn-<depth>-<width>"], "'wrn-<depth>-<width>' is a template"),
    ],
)
def test_bad_patterns_and_preset_paths_exit_2_with_one_line(tmp_path, args, needle):
    code, lines = run_cli(tmp_path, *args)
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("lr = 0.05", "lr = nan"), "optimizer.lr must be a finite number > 0, got nan"),
        (("lr = 0.05", 'lr = "fast"'), "optimizer.lr must be a finite number > 0, got 'fast'"),
        (("momentum = 0.9", "momentun = 0.9"), "unknown key optimizer.momentun"),
        (("milestones = [0.5, 0.75]", "milestones = [1.5, -2]"), "schedule.milestones must be"),
    ],
)
def test_a_bad_preset_stops_the_command_before_anything_runs(tmp_path, edit, needle):
    text = files("benchsuite.presets").joinpath("digits.toml").read_text()
    assert edit[0] in text
    path = tmp_path / "mine.toml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    code, lines = run_cli(tmp_path, "--preset", str(path), "--methods", "dense")
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines


def test_a_preset_file_with_an_unknown_model_is_refused_before_running(tmp_path):
    text = files("benchsuite.presets").joinpath("digits.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(text.replace('model = "small-cnn"', 'model = "no-such-net"'))
    code, lines = run_cli(tmp_path, "--preset", str(path), "--methods", "dense")
    assert code == 2 and len(lines) == 1, lines
    assert "--preset: unknown model 'no-such-net'; choose from " in lines[0]


# --------------------------------------------------------------------------- --methods patterns


def test_patterns_select_among_the_budget_equal_methods():
    assert parse_methods("*") == parse_methods("all")
    assert parse_methods("imp*") == ["imp"]  # imp-retrain is a study setting, named exactly
    assert parse_methods("imp*,imp-retrain") == ["imp", "imp-retrain"]
    assert parse_methods("?mp,dense,gmp") == ["gmp", "imp", "dense"]  # in order, once each
    assert parse_methods("[bg]mp") == ["gmp"]
    starting_s = {
        m
        for m in list_methods()
        if m.startswith("s")
        and get_method(m).budget_equal
        and "unstructured" in get_method(m).patterns
    }  # without --pattern: the unstructured methods (not srste, sfp)
    assert set(parse_methods("s*")) == starting_s
    with pytest.raises(BadInput, match="'IMP\\*' matches no budget-equal method"):
        parse_methods("IMP*")  # case-sensitive, like the names
