"""What the command line prints: trial lines, the leaderboard, the Pareto set, progress."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from automl_core import console
from automl_core.cli import main
from automl_core.model.space import (
    PARAMETERS,
    SEARCH_SPACE,
    ModelConfig,
    SearchSpace,
    active_parameters,
)
from automl_core.storage import store
from automl_core.storage.settings import SearchSettings
from automl_core.storage.trials import TrialRecord

ROOT = Path(__file__).resolve().parent.parent
# parameters that act only on some configurations (the ``when`` rows)
CONDITIONAL = {"noise", "noise_type", "kl_weight", "sparsity", "ssim_weight", "momentum"}
CONDITIONAL |= {"weight_decay", "downsample", "upsample"}
METRICS = {"val_mse": 0.012345, "test_psnr": 19.5312, "test_ssim": 0.81234}
METRICS |= {"train_seconds": 12.34, "pca_psnr": 18.2}


def _record(number: int = 3, **config) -> TrialRecord:
    return TrialRecord(
        number,
        "COMPLETE",
        config=ModelConfig(**config).to_dict(),
        metrics=METRICS,
        precision="float32",
    )


# --- which parameters act -------------------------------------------------------------------


class TestActiveParameters:
    @pytest.mark.parametrize(
        "config, acting, idle",
        [
            ({}, {"downsample", "upsample"}, CONDITIONAL - {"downsample", "upsample"}),
            ({"objective": "denoising"}, {"noise", "noise_type"}, {"kl_weight", "sparsity"}),
            ({"objective": "variational"}, {"kl_weight"}, {"noise", "sparsity"}),
            ({"objective": "sparse"}, {"sparsity"}, {"noise", "kl_weight"}),
            ({"loss": "mse_ssim"}, {"ssim_weight"}, {"noise"}),
            ({"optimizer": "sgd"}, {"momentum", "weight_decay"}, {"noise"}),
            ({"optimizer": "adamw"}, {"weight_decay"}, {"momentum"}),
            ({"block": "strided"}, set(), {"downsample", "upsample"}),
        ],
    )
    def test_conditions(self, config, acting, idle):
        names = set(active_parameters(config))
        assert acting <= names and not idle & names
        # the rows without a condition always act
        assert set(PARAMETERS) - CONDITIONAL <= names

    def test_every_condition_names_a_row_and_its_values(self):
        for spec in PARAMETERS.values():
            if spec.when is not None:
                other, values = spec.when
                assert other in PARAMETERS and other != spec.name
                assert set(values) <= set(PARAMETERS[other].allowed)

    def test_varying_parameters_of_a_space(self):
        space = SearchSpace.from_dict(
            {"filters": [4, 8], "latent_dim": [4], "learning_rate": {"low": 1e-4, "high": 1e-2}}
        )
        assert space.varying() == ["filters", "learning_rate"]
        assert SearchSpace.from_dict({}).varying() == []


# --- a trial's line ---------------------------------------------------------------------------


class TestTrialLine:
    VARYING = ["num_conv_layers", "learning_rate", "objective", "noise", "kl_weight", "momentum"]

    def test_a_plain_trial_names_only_what_acts_in_short_numbers(self):
        line = console.trial_line(
            _record(num_conv_layers=2, learning_rate=0.0005846326121643416), self.VARYING
        )
        assert line.startswith("trial    3 COMPLETE num_conv_layers=2 learning_rate=0.000585")
        assert "objective=plain" in line
        for idle in ("noise", "kl_weight", "momentum", "filters", "sparsity", "warmup_epochs"):
            assert f"{idle}=" not in line
        assert "0.0005846" not in line and "val_mse=0.0123" in line
        assert "psnr=19.53dB" in line and "vs_pca=+1.33dB" in line and "[float32]" in line

    def test_a_variational_trial_shows_its_kl_weight(self):
        record = _record(objective="variational", kl_weight=0.123456, learning_rate=0.001)
        line = console.trial_line(record, self.VARYING)
        assert "objective=variational" in line and "kl_weight=0.123 " in line
        assert "learning_rate=0.001 " in line
        assert "noise=" not in line and "momentum=" not in line

    def test_ints_print_as_ints_and_a_failure_says_why(self):
        assert console.short_value(64) == "64" and console.short_value(3.0) == "3"
        assert console.short_value(float("nan")) == "-" and console.short_value(1e-5) == "1e-05"
        failed = TrialRecord(5, "FAIL", config={"filters": 8}, fail_reason="loss became NaN")
        assert console.trial_line(failed, ["filters"]) == (
            "trial    5 FAIL     filters=8  loss became NaN"
        )

    def test_without_a_stored_space_the_values_off_their_default_show(self):
        line = console.trial_line(_record(filters=32, momentum=0.5), None)
        assert "filters=32" in line and "momentum" not in line and "latent_dim" not in line


# --- the leaderboard ---------------------------------------------------------------------------

WIDE_SPACE = {
    **SEARCH_SPACE,
    "latent_dim": [4, 8, 16],
    "objective": ["plain", "variational"],
    "kl_weight": [0.5, 1.0],
    "optimizer": ["adam", "sgd"],
    "momentum": [0.5, 0.9],
    "dropout": [0.0, 0.1],
}


@pytest.fixture
def wide_study(tmp_path):
    """(name, url) of a study of 8 hand-made trials over a space where 13 parameters vary."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="wide", storage=url)
    settings = SearchSettings(study="wide", dataset="digits", space=WIDE_SPACE, strategy="random")
    study.set_user_attr(store.SETTINGS_ATTR, settings.to_dict())
    space = settings.search_space()
    for i in range(8):
        config = {n: p.values[i % len(p.values)] for n, p in space.parameters.items()}
        config["learning_rate"] = 0.0005846326121643416 * (i + 1)
        metrics = {**METRICS, "val_mse": 0.01 * (i + 1), "param_count": 1000 + i}
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=metrics["val_mse"],
                user_attrs={"config": config, "metrics": metrics, "artifact_dir": f"w/{i}"},
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            user_attrs={"config": config, "fail_reason": "the model does not fit: " + "x" * 90},
        )
    )
    return "wide", url


class TestLeaderboard:
    def test_the_default_fits_100_columns(self, wide_study, capsys):
        name, url = wide_study
        assert main(["leaderboard", "--study", name, "--storage", url]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert max(map(len, lines[:10])) <= 100
        header = lines[0].split()
        assert header[:6] == ["trial", "state", "val_mse", "test_psnr", "vs_pca_db", "seconds"]
        assert "layers" in header and "lr" in header and "pca_psnr" not in header
        assert "0.000585" in lines[1] and "0.0005846" not in "\n".join(lines)
        assert lines[10].startswith("not shown: ") and "--wide" in lines[10]
        assert lines[11].startswith("vs_pca_db: ")

    def test_a_parameter_that_does_not_act_is_a_dash(self):
        frame = pd.DataFrame(
            [
                {"trial": 0, "state": "COMPLETE", "objective": "plain", "kl_weight": 2.0},
                {"trial": 1, "state": "COMPLETE", "objective": "variational", "kl_weight": 0.5},
            ]
        )
        table = console.leaderboard_table(frame, ["objective", "kl_weight"])
        assert table.lines[0].split() == ["trial", "state", "obj", "kl"]
        assert table.lines[1].split()[-1] == "-" and table.lines[2].split()[-1] == "0.5"

    def test_wide_has_every_column(self, wide_study, capsys):
        name, url = wide_study
        assert main(["leaderboard", "--study", name, "--storage", url, "--wide"]) == 0
        lines = capsys.readouterr().out.splitlines()
        header = lines[0].split()
        assert {*PARAMETERS, "pca_psnr", "test_ssim", "precision", "note"} <= set(header)
        assert max(map(len, lines)) > 100 and not any(x.startswith("not shown") for x in lines)

    def test_csv_and_json_parse_back(self, wide_study, capsys):
        name, url = wide_study
        assert main(["leaderboard", "--study", name, "--storage", url, "--format", "csv"]) == 0
        frame = pd.read_csv(io.StringIO(capsys.readouterr().out), float_precision="round_trip")
        assert len(frame) == 9 and list(frame.columns[:4]) == [
            "study",
            "trial",
            "state",
            "val_mse",
        ]
        assert frame.loc[0, "learning_rate"] == 0.0005846326121643416
        assert main(["leaderboard", "--study", name, "--storage", url, "--format", "json"]) == 0
        records = json.loads(capsys.readouterr().out)
        assert len(records) == 9 and set(PARAMETERS) <= set(records[0])
        assert records[0]["learning_rate"] == 0.0005846326121643416
        assert records[-1]["state"] == "FAIL" and records[-1]["val_mse"] is None
        assert (
            main(
                ["leaderboard", "--study", name, "--storage", url, "--format", "json"]
                + ["--top", "2"]
            )
            == 0
        )
        assert [r["trial"] for r in json.loads(capsys.readouterr().out)] == [0, 1]


# --- the Pareto set -----------------------------------------------------------------------------


def test_the_pareto_table_keeps_the_front_lowest_mse_first():
    study = optuna.create_study(directions=["minimize", "maximize"])
    for number, (mse, ratio, latent) in enumerate(
        [(0.02, 16.0, 4), (0.01, 8.0, 8), (0.03, 4.0, 16), (0.05, 32.0, 2)]
    ):
        config = ModelConfig(latent_dim=latent, learning_rate=0.001 * (number + 1)).to_dict()
        metrics = {**METRICS, "val_mse": mse, "compression_ratio": ratio}
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=[mse, ratio],
                user_attrs={"config": config, "metrics": metrics, "artifact_dir": "x"},
            )
        )
    title, table = console.pareto_table(study, ["latent_dim", "learning_rate", "momentum"])
    assert title.startswith("Pareto set: 3 trials") and "compression_ratio (higher)" in title
    assert table.lines[0].split() == [
        "trial",
        "val_mse",
        "compression_ratio",
        "test_psnr",
        "latent",
        "lr",
    ]
    assert [line.split()[0] for line in table.lines[1:]] == ["1", "0", "3"]  # 2 is dominated


# --- progress ---------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _running(number: int, epochs: float, val_mse: list[float]) -> TrialRecord:
    live = {"epoch": int(epochs) + 1, "epochs": epochs, "val_mse": val_mse}
    return TrialRecord(number, "RUNNING", live=live)


class TestProgress:
    def test_a_terminal_gets_bars_with_the_time_left(self):
        stream = _Terminal()
        progress = console.EpochProgress(20, budget=4, stream=stream)
        assert progress.tty
        progress.update([_running(3, 0.0, [])])
        progress.update([_running(3, 2.0, [0.02, 0.0123])])
        progress.write("trial    3 COMPLETE ...", finished=3)
        progress.close()
        out = stream.getvalue()
        assert "search:" in out and "/4" in out and "trial 3:" in out and "/20 epochs" in out
        assert "<" in out and "\r" in out  # elapsed<remaining, redrawn in place
        assert "trial    3 COMPLETE ...\n" in out

    def test_elsewhere_a_plain_line_per_epoch(self):
        stream = io.StringIO()
        progress = console.EpochProgress(20, budget=4, stream=stream)
        assert not progress.tty
        progress.update([_running(3, 0.0, [])])
        progress.update([_running(3, 1.0, [0.02])])
        progress.update([_running(3, 1.0, [0.02])])  # the same epoch again: no new line
        progress.update([_running(3, 2.0, [0.02, 0.0123]), _running(4, 0.33, [0.5])])
        progress.write("trial    3 COMPLETE ...", finished=3)
        progress.close()
        assert stream.getvalue().splitlines() == [
            "trial 3 epoch 1/20 val_mse=0.02",
            "trial 3 epoch 2/20 val_mse=0.0123",
            "trial    3 COMPLETE ...",
        ]


def test_a_users_tensorflow_log_level_keeps_its_lines(monkeypatch):
    from automl_core import cli

    before = list(sys.meta_path)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    cli._quiet_tensorflow_import()
    assert sys.meta_path == before


# --- real searches --------------------------------------------------------------------------

TINY = ["--dataset", "digits", "--max-images", "120", "--max-epochs", "1"]
TINY += ["--num-conv-layers", "1", "--filters", "4", "--batch-size", "32"]


def _in_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs the CLI on a pseudo-terminal (80x24); returns its status and all it printed."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "automl_core", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return process.wait(timeout=300), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_a_search_on_a_terminal_draws_bars_and_no_tensorflow_noise(runs_dir):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    argv = ["search", *TINY, "--strategy", "grid", "--latent-dim", "4", "--activation", "relu"]
    # --show-filters: this process loads the model, so imports TensorFlow too
    status, out = _in_a_terminal([*argv, "--study", "tty", "--show-filters"], env)
    assert status == 0, out
    assert "search:" in out and "trial/s" in out and "\r" in out  # the search's bar
    assert "trial    0 COMPLETE" in out and "Layer_1:" in out and "Filter 1:" in out
    assert "absl" not in out and "oneDNN" not in out and "cuda" not in out.lower()


@pytest.mark.slow
def test_nsga2_ends_with_the_pareto_set_and_no_filters(runs_dir, capsys):
    argv = ["search", *TINY, "--strategy", "nsga2", "--latent-dim", "2,4,8", "--trials", "3"]
    assert main([*argv, "--study", "front"]) == 0
    out = capsys.readouterr().out
    assert "Pareto set: " in out and "Best trial:" not in out
    assert "Layer_1:" not in out and "Filter 1:" not in out
    lines = out.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("Pareto set: ")) + 1
    assert lines[start].split()[:4] == ["trial", "val_mse", "compression_ratio", "test_psnr"]
    front = store.load_study("front", store.default_storage_url()).best_trials
    rows = lines[start + 1 : start + 1 + len(front)]
    assert sorted(int(r.split()[0]) for r in rows) == sorted(t.number for t in front)
    assert max(map(len, lines[start:])) <= 100
