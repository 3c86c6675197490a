"""``--tuned-configs FILE``: any file a user gives is checked, shape, values and data, before
anything runs; each problem is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchsuite.cli.app import app
from benchsuite.core.errors import BadInput
from benchsuite.data.base import load_dataset
from benchsuite.presets import load_preset
from benchsuite.tuning.search import check_tuned_entries, check_tuned_shape, load_tuned

EPOCHS = 4


def good_file() -> dict:
    """What ``benchsuite tune --methods gmp --sparsity 0.9 --epochs 4`` saves for digits."""
    preset = load_preset("digits")
    return {
        "preset": "digits",
        "dataset": preset.dataset,
        "model": preset.model,
        "epochs": EPOCHS,
        "data": load_dataset("digits").fingerprint,
        "trials_per_method": 2,
        "seeds": [1000, 1001],
        "methods": {
            "gmp": {
                "0.9": {
                    "hparams": {"pruning_interval": "2", "ramp_end": 0.6},
                    "space": {"ramp_end": "uniform real in [0.2, 0.9]"},
                    "trials": 2,
                    "finished": 2,
                    "val_accuracy": 97.5,
                    "seed": 1001,
                    "run_id": "abc",
                }
            }
        },
    }


def gmp_entry(**hparams) -> dict:
    return {"hparams": hparams}


BAD = [
    ([1, 2], "top level: [1, 2] is not of type 'object'"),
    ({**good_file(), "methods": "gmp"}, "f.json: methods: 'gmp' is not of type 'object'"),
    (
        {**good_file(), "methods": {"gmp": {"0.9": {"hparams": [1]}}}},
        "f.json: methods.gmp.0.9.hparams: [1] is not of type 'object'",
    ),
    (
        {**good_file(), "methods": {"gmp": {"0.9": {"hparams": {"x": [1]}}}}},
        "f.json: methods.gmp.0.9.hparams.x: [1] is not of type 'string', 'number', 'boolean'",
    ),
    ({**good_file(), "epochs": "four"}, "f.json: epochs: 'four' is not of type 'integer'"),
    (
        {k: v for k, v in good_file().items() if k != "data"},
        "f.json: top level: 'data' is a required property",
    ),
    (
        {**good_file(), "methods": {"gmp": {"0.9": gmp_entry(nosuch=1)}}},
        "methods.gmp.0.9.hparams: gmp has no hyperparameter 'nosuch'; choose from ",
    ),
    (
        {**good_file(), "methods": {"gmp": {"0.9": gmp_entry(pruning_interval="abc")}}},
        "methods.gmp.0.9.hparams: pruning_interval='abc': expected an integer",
    ),
    (
        {**good_file(), "methods": {"gmp": {"0.9": gmp_entry(ramp_end="nan")}}},
        "methods.gmp.0.9.hparams: ramp_end='nan': expected a finite number, not nan",
    ),
    (
        {**good_file(), "methods": {"nosuch": {"0.9": gmp_entry()}}},
        "methods.nosuch: unknown method; choose from ",
    ),
    (
        {**good_file(), "methods": {"gmp": {"0.90": gmp_entry()}}},
        "methods.gmp.0.90: a target must be a sparsity in (0, 1)",
    ),
]


@pytest.mark.parametrize(("payload", "needle"), BAD)
def test_a_file_of_the_wrong_shape_or_values_is_one_line(payload, needle):
    with pytest.raises(BadInput) as info:
        check_tuned_shape(payload, "--tuned: f.json")
        check_tuned_entries(payload, "--tuned: f.json")
    message = str(info.value)
    assert "\n" not in message and needle in message, message


def test_a_file_tuned_on_other_data_is_refused(tmp_path):
    preset = load_preset("digits").replace(epochs=EPOCHS)
    data = load_dataset("digits")
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({**good_file(), "data": "ffffffffffffffff"}))
    with pytest.raises(BadInput, match="was tuned for data fingerprint 'ffffffffffffffff', not"):
        load_tuned(preset, ["gmp"], [0.9], path=path, data=data)
    path.write_text(json.dumps(good_file()))
    expected = {"gmp": {"0.9": {"pruning_interval": "2", "ramp_end": "0.6"}}}
    assert load_tuned(preset, ["gmp"], [0.9], path=path, data=data) == expected


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ([1, 2], "top level: [1, 2] is not of type 'object'"),
        (BAD[2][0], "methods.gmp.0.9.hparams: [1] is not of type 'object'"),
        BAD[6],
        BAD[7],
        BAD[8],
        ({**good_file(), "data": "0" * 16}, "tuned for data fingerprint"),
    ],
)
def test_run_refuses_a_bad_file_before_anything_runs(tmp_path, monkeypatch, payload, needle):
    monkeypatch.chdir(tmp_path)
    path = Path("tuned.json")
    path.write_text(json.dumps(payload))
    args = ["run", "--methods", "gmp", "--epochs", str(EPOCHS), "--tuned-configs", str(path)]
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and needle in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.json"]  # no store, no cache
