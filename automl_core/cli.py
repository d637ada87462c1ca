"""The command line: ``python -m automl_core search|worker|leaderboard|filters|anomalies|
datasets|export|precision|hash-password``."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from automl_core.errors import AutoMLError, ConfigError, file_problem

# Each command imports what it uses inside its function: `--help`, `datasets`, `leaderboard`
# and the other reading commands never import TensorFlow (seconds on a slow machine).

# TensorFlow's C++ start-up logging off for every command and, inherited, for the workers
# (unless the user set a level); see _quiet_tensorflow_import for the lines it still prints
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _QuietLoader:
    """Runs a module's import with the process's stderr (file descriptor 2) on /dev/null."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # everything else (resources, source) as the real loader
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            self._loader.exec_module(module)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
        import logging

        # absl's Python logger: Keras' and TensorFlow's "WARNING:absl:" notes
        logging.getLogger("absl").setLevel(logging.ERROR)


class _QuietTensorFlowImport:
    """An import hook that imports ``tensorflow`` with its native start-up lines silenced.

    TensorFlow 2.21 writes its first log lines through absl before its logging is set up
    ("All log messages before absl::InitializeLog() is called are written to STDERR", oneDNN,
    CUDA drivers), whatever ``TF_CPP_MIN_LOG_LEVEL`` says; they come from C++ straight to file
    descriptor 2 while the package loads. A Python error of the import still surfaces (it is
    raised after stderr is back).
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        import importlib.util

        sys.meta_path.remove(self)  # once: find the real spec, then step aside
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _quiet_tensorflow_import() -> None:
    """Silences TensorFlow's start-up lines in this process when its log level is 3 (the
    default set above: a user who sets another level sees them)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3" or "tensorflow" in sys.modules:
        return
    if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=None,
        help="SQLAlchemy URL of the study storage (default: AUTOML_STORAGE or "
        "sqlite:///<AUTOML_HOME>/studies.db)",
    )


TABLE_FORMATS = ("table", "csv", "json")


def _add_table_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wide",
        action="store_true",
        help="every column of the leaderboard (default: the key metrics and the parameters "
        f"that vary, in {DEFAULT_WIDTH} columns)",
    )
    parser.add_argument(
        "--format",
        default="table",
        choices=TABLE_FORMATS,
        help="the leaderboard as a text table (default), or every column as CSV or JSON "
        "records (search prints it last)",
    )


def _build_parser() -> argparse.ArgumentParser:
    from automl_core.model.precision import PRECISION_ENV, PRECISIONS, SPEEDUP_THRESHOLD
    from automl_core.model.space import PARAMETERS
    from automl_core.search.strategies import STRATEGIES
    from automl_core.storage.settings import DEFAULT_STRATEGY, SECOND_OBJECTIVES

    parser = argparse.ArgumentParser(
        # the console script says its own name; `python -m automl_core` says that
        prog="automl" if os.path.basename(sys.argv[0]) == "automl" else "python -m automl_core",
        description="AutoML search over convolutional autoencoders.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="run or resume a search")
    search.add_argument(
        "--settings",
        default=None,
        metavar="FILE",
        help="a whole search as one JSON document (the one a dashboard launch writes, "
        "SearchSettings.to_json); flags given beside it override its values",
    )
    search.add_argument(
        "--dataset",
        default=None,
        help="registry name or path (default mnist-5k; a resumed study: its own)",
    )
    search.add_argument(
        "--space",
        default=None,
        help="JSON or YAML search-space file (default: the seeds' 16-configuration grid for "
        "grid search, a roomier space for every other strategy; see the README)",
    )
    for name, spec in PARAMETERS.items():
        values = ", ".join(map(str, spec.allowed)) if spec.allowed else ""
        search.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"param_{name}",
            default=None,
            metavar="V[,V..]|LOW:HIGH[:log]" if spec.numeric else "V[,V..]",
            help=f"{spec.help}{f' ({values})' if values else ''}; default "
            f"{','.join(map(str, spec.grid))} (overrides --space)",
        )
    search.add_argument(
        "--strategy",
        default=None,
        help=f"one of {', '.join(STRATEGIES)} (default {DEFAULT_STRATEGY}; a resumed study: "
        "its own)",
    )
    search.add_argument("--trials", type=int, default=None, help="trials to finish in the study")
    search.add_argument(
        "--timeout", type=float, default=None, help="wall-clock seconds for the search"
    )
    search.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="most epochs per trial (default 20; a resumed study: its own)",
    )
    search.add_argument(
        "--study",
        default=None,
        help="study name (default: <dataset>-<strategy>); an existing study resumes with its "
        "stored settings, and a flag that contradicts them is refused",
    )
    search.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    search.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed of the data split, the sampler and the weights, 0 to {MAX_SEED} (default 0)",
    )
    search.add_argument("--max-images", type=int, default=None, help="use only this many images")
    search.add_argument(
        "--second-objective",
        default=None,
        choices=list(SECOND_OBJECTIVES),
        help="second objective of nsga2",
    )
    search.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help=f"number format of training (default: {PRECISION_ENV}, else auto): auto "
        f"measures this machine once and uses bfloat16 / float16 only where it trains at "
        f"least {SPEEDUP_THRESHOLD:g}x faster than float32; float16 needs a GPU",
    )
    search.add_argument(
        "--show-filters",
        action="store_true",
        help="end with the learned 3x3 filters of each encoder layer of the best model (as "
        "the filters command prints them)",
    )
    _add_table_flags(search)
    _add_storage(search)

    worker = commands.add_parser("worker", help="join an existing study and run its trials")
    worker.add_argument("--study", required=True, help="the study to join")
    worker.add_argument(
        "--seed-offset",
        type=int,
        default=None,
        help="added to the sampler seed (default: from the process id)",
    )
    worker.add_argument(
        "--max-trials",
        type=int,
        default=None,
        help="stop after this many trials (default: until the budget is spent)",
    )
    worker.add_argument("--quiet", action="store_true", help="print nothing per trial")
    _add_storage(worker)

    board = commands.add_parser("leaderboard", help="print a study's trials, best first")
    board.add_argument("--study", required=True, help="the study to print")
    board.add_argument("--top", type=int, default=None, help="print only the best N")
    _add_table_flags(board)
    _add_storage(board)

    filters = commands.add_parser("filters", help="print the encoder filters of a trial")
    filters.add_argument("--study", required=True, help="the study of the trial")
    filters.add_argument("--trial", type=int, default=None, help="trial number (default: best)")
    filters.add_argument("--all-channels", action="store_true", help="every input channel")
    _add_storage(filters)

    anomalies = commands.add_parser(
        "anomalies",
        help="score images by a trial's reconstruction error and list those it flags",
        description="Scores images by how badly a trial's model reconstructs them, against "
        "the reconstruction errors of the study's validation images (as the Reconstructions "
        "page does): an image above the chosen percentile of those errors is flagged.",
    )
    anomalies.add_argument("--study", required=True, help="the study of the trial")
    anomalies.add_argument("--trial", type=int, default=None, help="trial number (default: best)")
    anomalies.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="images to score: an .npz with 'x' (and 'y'), a .zip or folder of images, or a "
        "dataset name; they must have the model's input shape (default: the study's test split)",
    )
    anomalies.add_argument(
        "--percentile",
        type=float,
        default=DEFAULT_ANOMALY_PERCENTILE,
        help="flag images above this percentile of the validation images' errors, 0 to 100 "
        f"(default {DEFAULT_ANOMALY_PERCENTILE:g})",
    )
    anomalies.add_argument(
        "--csv",
        default=None,
        metavar="OUT",
        help="where to write every image's score (default: <study>-trial<N>-anomalies.csv in "
        "the current folder)",
    )
    _add_storage(anomalies)

    datasets = commands.add_parser("datasets", help="list the dataset registry")
    datasets.add_argument(
        "--details", action="store_true", help="load each offline one and show its shape"
    )

    export = commands.add_parser(
        "export", help="write a trial's .zip bundle and the study's HTML report into a folder"
    )
    export.add_argument("--study", required=True, help="the study to export")
    export.add_argument("--out", required=True, help="the folder to write into (created)")
    export.add_argument("--trial", type=int, default=None, help="trial number (default: best)")
    _add_storage(export)

    precision = commands.add_parser(
        "precision",
        help="show what the precision probe measured on this machine and what auto picks",
    )
    precision.add_argument(
        "--measure", action="store_true", help="measure again now (else the cached result)"
    )
    precision.add_argument("--quiet", action="store_true", help="print nothing")

    commands.add_parser(
        "hash-password",
        help="read a password (no echo on a terminal, else one line of stdin) and print its "
        "argon2 hash for [automl.users.<name>] password_hash in .streamlit/secrets.toml",
    )
    return parser


MAX_SEED = 2**31 - 1
DEFAULT_WIDTH = 100  # automl_core.console.DEFAULT_WIDTH, without importing pandas for --help
DEFAULT_ANOMALY_PERCENTILE = 99.0  # as the Reconstructions page's slider starts


def _check_count(name: str, value: int | None, low: int = 1, high: int | None = None) -> None:
    """Refuses a command-line count outside ``low..high``, naming the flag and the value."""
    if value is None or (value >= low and (high is None or value <= high)):
        return
    if high is not None and value > high:
        raise ConfigError(f"{name} must be at most {high}, got {name}={value}")
    kind = "a non-negative integer" if low == 0 else "a positive integer"
    raise ConfigError(f"{name} must be {kind}, got {name}={value}")


def _settings_from_args(args):
    """The search of ``search``'s flags (over a ``--settings`` file's values, and over the
    stored settings when the study exists: see :func:`preflight.resolve_settings`)."""
    from automl_core.model.space import PARAMETERS
    from automl_core.search.preflight import resolve_settings

    _check_count("seed", args.seed, low=0, high=MAX_SEED)
    given = _settings_file(args.settings) if args.settings else {}
    for key in (
        "study",
        "dataset",
        "strategy",
        "trials",
        "timeout",
        "max_epochs",
        "seed",
        "max_images",
        "second_objective",
        "precision",
    ):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    space_named = args.space or any(getattr(args, f"param_{n}") is not None for n in PARAMETERS)
    # a resume takes the stored settings as its defaults and refuses a flag that
    # contradicts one, naming both values
    return resolve_settings(
        given, args.storage, (lambda base: _space_from_args(args, base)) if space_named else None
    )


def _settings_file(path: str) -> dict:
    """The values of a ``--settings`` file (checked as a whole search's settings)."""
    from automl_core import limits
    from automl_core.storage.settings import SearchSettings

    if not os.path.isfile(path):
        raise ConfigError(f"settings file '{path}' does not exist")
    limit = limits.get("max_space_file_bytes")  # a space is most of a search's settings
    size = os.path.getsize(path)
    if size > limit:
        raise ConfigError(
            f"settings file '{path}' is {size:,} bytes, more than the {limit:,} allowed "
            "(AUTOML_MAX_SPACE_FILE_BYTES)"
        )
    with open(path, "rb") as handle:
        text = handle.read().decode("utf-8", errors="replace")
    return SearchSettings.from_json(text, f"settings file '{path}'").to_dict()


def _space_from_args(args, base: dict) -> dict:
    """The search space from ``--space`` and the per-parameter flags, over ``base``."""
    from automl_core.model.space import PARAMETERS, SearchSpace, load_space, parse_parameter_text

    if args.space:
        spec = load_space(args.space).to_dict()
    else:
        spec = dict(base)
    for name in PARAMETERS:
        text = getattr(args, f"param_{name}")
        if text is not None:
            spec[name] = parse_parameter_text(name, text)
    return SearchSpace.from_dict(spec).to_dict()


def _format_number(value) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.5g}"
    )


def _print_trial(study, trial) -> None:
    """One line per finished trial: number, the parameters that vary and act, its metrics."""
    from automl_core.console import study_varying, trial_line
    from automl_core.storage.trials import TrialRecord

    print(trial_line(TrialRecord.from_frozen(trial), study_varying(study)), flush=True)


def _print_leaderboard(
    study, top: int | None = None, wide: bool = False, form: str = "table"
) -> None:
    """The study's trials, best first: a table fitting 100 columns (every column with
    ``wide``), or every column as CSV or JSON records."""
    from automl_core.console import leaderboard_table, study_varying
    from automl_core.storage.results import trials_frame

    frame = trials_frame(study)
    if top is not None:
        frame = frame.head(top)
    if form != "table":  # every column, in reading order, full precision
        from automl_core.analysis.leaderboard import display_columns

        frame = frame[display_columns(frame, with_study=True)]
        if form == "csv":
            frame.to_csv(sys.stdout, index=False)
        else:
            print(_json_records(frame))
        return
    table = leaderboard_table(frame, study_varying(study), wide=wide)
    print("\n".join(table.lines))
    # under the whole table only: --top prints exactly the header and its rows
    if top is None and table.hidden:
        print(f"not shown: {', '.join(table.hidden)} (--wide shows every column)")
    if top is None and "vs_pca_db" in frame and frame["vs_pca_db"].notna().any():
        from automl_core.storage.results import VS_PCA_HELP

        print(f"vs_pca_db: {VS_PCA_HELP}")


def _json_records(frame) -> str:
    """A table as a JSON list of records, numbers at full precision, NaN as null."""
    import json

    def plain(value):
        value = value.item() if hasattr(value, "item") else value  # numpy scalars
        return None if isinstance(value, float) and math.isnan(value) else value

    records = [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return json.dumps(records, default=str)


def _print_best(study) -> None:
    """The best trial's metrics, how it compares with PCA, and its configuration."""
    from automl_core.analysis.leaderboard import pca_verdict
    from automl_core.console import DEFAULT_WIDTH as WIDTH
    from automl_core.console import wrapped_pairs
    from automl_core.model.space import active_parameters
    from automl_core.storage.results import best_trial
    from automl_core.storage.trials import TrialRecord

    trial = best_trial(study)
    record = TrialRecord.from_frozen(trial)
    metrics = record.metrics
    print(
        f"\nBest trial: {trial.number} (val_mse={metrics['val_mse']:.5f}, "
        f"psnr={metrics['test_psnr']:.2f} dB, ssim={metrics['test_ssim']:.3f})"
    )
    verdict = pca_verdict(
        trial.number,
        record.config.get("latent_dim"),
        metrics.get("test_psnr"),
        metrics.get("pca_psnr"),
    )
    if verdict is not None:
        print(("WARNING: " if verdict.below else "") + verdict.text)
    print("Best configuration (the parameters that act on it):")
    names = [n for n in active_parameters(record.config) if n in record.config]
    print("\n".join(wrapped_pairs(record.config, names, WIDTH, "  ")))


def _print_pareto(study) -> None:
    """The Pareto set of a multi-objective study, as a short table."""
    from automl_core.console import pareto_table, study_varying

    title, table = pareto_table(study, study_varying(study))
    if len(table.lines) < 2:
        print(f"\nstudy {study.study_name!r} has no finished trial yet: no Pareto set")
        return
    print(f"\n{title}:")
    print("\n".join(table.lines))
    if table.hidden:
        print(f"not shown: {', '.join(table.hidden)} (leaderboard --wide shows every column)")


def _print_filters(study, number: int | None = None, all_channels: bool = False) -> None:
    """The learned filters of each encoder layer of a trial's model (the best by default)."""
    from automl_core.analysis.inspect import encoder_filters, format_filters
    from automl_core.storage import store
    from automl_core.storage.results import best_trial

    number = best_trial(study).number if number is None else store.get_trial(study, number).number
    model = store.load_trial_model(study, number)
    print(format_filters(encoder_filters(model), all_channels=all_channels))


def _print_best_and_filters(study, number: int | None = None, all_channels: bool = False) -> None:
    if number is None:
        _print_best(study)
        print()
    _print_filters(study, number, all_channels)


def _cmd_search(args) -> int:
    from automl_core.search.preflight import check_search
    from automl_core.search.runner import run_search
    from automl_core.search.workers import stop_on_interrupt

    settings = _settings_from_args(args)
    check_search(settings, args.storage)  # bad input fails here, before any line is printed
    print(
        f"study {settings.study}: dataset {settings.dataset}, strategy {settings.strategy}, "
        f"budget {settings.trial_budget()} trials"
        + (f" / {settings.timeout:g} s" if settings.timeout else ""),
        flush=True,
    )
    printed: list[int] = []
    view = _SearchView()

    def on_trial(study, trial):
        printed.append(trial.number)
        view.trial_done(trial)

    def on_start(study):
        from automl_core.storage.settings import study_precision

        print(study_precision(study).summary(), flush=True)
        view.start(study)

    try:
        # SIGTERM too: the workers are stopped, their trials re-queued
        with stop_on_interrupt():
            study = run_search(
                settings,
                args.storage,
                on_trial=on_trial,
                workers=args.workers,
                on_start=on_start,
                on_progress=view.progress,
            )
    except KeyboardInterrupt:
        view.close()  # the bars first, so the message is not drawn over
        print("\nstopped; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        view.close()
    from automl_core.search.runner import exhausted_message

    ended = exhausted_message(study)
    if ended:
        print(f"\n{ended}")
    elif not printed:
        print(
            f"nothing to train: study {settings.study} has already spent its budget "
            "(raise --trials or --timeout to continue it)"
        )
    if args.format == "table":
        print("\nLeaderboard:")
        _print_leaderboard(study, wide=args.wide)
    from automl_core.errors import ArtifactMissing

    try:
        if len(study.directions) > 1:
            _print_pareto(study)
        else:
            _print_best(study)
        if args.show_filters:
            print()
            _print_filters(study)
    except ArtifactMissing as exc:
        print(f"\n{exc}")
    if args.format != "table":  # last, so a script finds it at the end of the output
        print()
        _print_leaderboard(study, form=args.format)
    return 0


class _SearchView:
    """What ``search`` shows while it runs: a line per finished trial and the per-epoch
    progress of the running ones (:class:`automl_core.console.EpochProgress`)."""

    def __init__(self):
        self.varying: list[str] | None = None
        self.epochs = None

    def start(self, study) -> None:
        """Reads the study's space and budget once its settings are stored."""
        from automl_core.console import EpochProgress
        from automl_core.storage.settings import study_settings

        settings = study_settings(study)
        self.varying = settings.search_space().varying()
        # a search bounded by its timeout alone has no trial count to show progress against
        open_ended = settings.timeout and not settings.trials and settings.strategy != "grid"
        budget = None if open_ended else settings.trial_budget()
        self.epochs = EpochProgress(settings.max_epochs, budget)

    def trial_done(self, trial) -> None:
        from automl_core.console import trial_line
        from automl_core.storage.trials import TrialRecord

        line = trial_line(TrialRecord.from_frozen(trial), self.varying)
        if self.epochs is None:
            print(line, flush=True)
        else:
            self.epochs.write(line, finished=trial.number)

    def progress(self, records) -> None:
        if self.epochs is not None:
            self.epochs.update(records)

    def close(self) -> None:
        if self.epochs is not None:
            self.epochs.close()


def _cmd_worker(args) -> int:
    from automl_core.search.runner import run_worker
    from automl_core.search.workers import stop_on_interrupt

    _check_count("seed_offset", args.seed_offset, low=0, high=MAX_SEED)
    _check_count("max_trials", args.max_trials)
    offset = args.seed_offset if args.seed_offset is not None else os.getpid()
    try:
        with stop_on_interrupt():
            run_worker(
                args.study,
                args.storage,
                on_trial=None if args.quiet else _print_trial,
                seed_offset=offset,
                max_trials=args.max_trials,
            )
    except KeyboardInterrupt:
        return 130
    return 0


def _cmd_leaderboard(args) -> int:
    from automl_core.storage import store

    _check_count("top", args.top)
    study = store.load_study(args.study, args.storage, create=False)
    _print_leaderboard(study, args.top, wide=args.wide, form=args.format)
    return 0


def _cmd_filters(args) -> int:
    from automl_core.storage import store

    study = store.load_study(args.study, args.storage, create=False)
    _print_best_and_filters(study, args.trial, args.all_channels)
    return 0


def _class_names(labels, class_names) -> list[str] | None:
    """Each image's class name (its label when the classes have no names), or None."""
    if labels is None:
        return None
    known = class_names or ()
    return [known[int(v)] if 0 <= int(v) < len(known) else str(int(v)) for v in labels]


def _images_to_score(args, data, input_shape: tuple[int, ...]):
    """``(images, class name per image or None, what they are)`` for ``anomalies``."""
    from automl_core.errors import DatasetError
    from automl_core.model.datasets import load_arrays

    if args.data is None:
        names = _class_names(data.y_test, data.class_names)
        return data.x_test, names, f"test images of the study's dataset ({data.name})"
    x, y, class_names = load_arrays(args.data)
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DatasetError(
            f"--data {args.data}: its images are {'x'.join(map(str, x.shape[1:]))} (HxWxC), "
            f"but the trial's model takes {'x'.join(map(str, input_shape))}"
        )
    return x, _class_names(y, class_names), f"images of {args.data}"


def _cmd_anomalies(args) -> int:
    import pandas as pd

    from automl_core.analysis import inspect
    from automl_core.storage import store
    from automl_core.storage.results import best_trial

    _check_count("trial", args.trial, low=0)
    if not 0.0 <= args.percentile <= 100.0:  # also NaN
        raise ConfigError(f"percentile must lie in 0..100, got percentile={args.percentile:g}")
    study = store.load_study(args.study, args.storage, create=False)
    number = best_trial(study).number if args.trial is None else args.trial
    model = store.load_trial_model(study, number)
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    from automl_core.storage.settings import study_dataset

    data = study_dataset(study)
    images, names, what = _images_to_score(args, data, input_shape)
    # the same scores as the Reconstructions page: encode, decode, reconstruction_scores
    scores = inspect.reconstruction_errors(model, images)
    validation = inspect.reconstruction_errors(model, data.x_val).mse
    report = inspect.anomaly_report(scores.mse, validation, args.percentile)
    out = args.csv or f"{args.study}-trial{number}-anomalies.csv"
    try:
        report.scores.to_csv(out, index=False)
    except OSError as exc:  # pandas leaves the path out of its error
        raise ConfigError(
            f"--csv {out}: the scores cannot be written there "
            f"({exc.strerror or exc or type(exc).__name__}); expected a file in an existing, "
            "writable folder"
        ) from exc
    print(
        f"study {args.study}, trial {number}: {len(images)} {what}; threshold MSE "
        f"{report.threshold:.5g} (percentile {args.percentile:g} of the errors of "
        f"{len(validation)} validation images)"
    )
    flagged = report.flagged
    if len(flagged):
        table = report.scores.loc[flagged, ["index", "mse", "percentile"]]
        if names is not None:
            table = table.assign(**{"class": [names[i] for i in flagged]})
        print(f"{len(flagged)} flagged, worst first:")
        with pd.option_context("display.width", 200):
            print(table.to_string(index=False, float_format=_format_number))
    else:
        print("no image is above the threshold")
    print(f"scores of all {len(images)} images: {out}")
    return 0


def _cmd_datasets(args) -> int:
    from automl_core.model.datasets import DATASETS, load_dataset

    for name, entry in DATASETS.items():
        where = "offline" if entry.offline else "download"
        line = f"{name:14s} {where:9s} {entry.description}"
        if args.details and entry.offline:
            data = load_dataset(name)
            line += f"  [{data.num_images} images of {data.input_shape}]"
        print(line)
    print(
        "or a path: an .npz with 'x' (and 'y'), a .zip or folder of images (labels from sub-folders)"
    )
    return 0


def _cmd_export(args) -> int:
    from automl_core.analysis.export import export_study

    _check_count("trial", args.trial, low=0)
    bundle, report = export_study(args.study, args.out, args.trial, args.storage)
    print(f"trial bundle: {bundle}\nstudy report: {report}")
    return 0


def _cmd_precision(args) -> int:
    from automl_core.model.precision import PrecisionChoice, choose_policy
    from automl_core.model.precision_probe import cached_probe, probe_cache_path, run_probe
    from automl_core.storage import store

    home = store.runs_home()
    result = None if args.measure else cached_probe(home)
    if result is None:
        result = run_probe(home)
    if args.quiet:
        return 0
    policy, reason = choose_policy(result)
    print(PrecisionChoice("auto", policy, reason, result).summary())
    for name, speed in sorted(result.images_per_second.items()):
        ratio = result.speedup(name)
        print(f"  {name:15s} {speed:9,.0f} images/s  {ratio:.2f}x float32")
    for name, error in sorted(result.errors.items()):
        print(f"  {name:15s} could not train: {error}")
    flags = ", ".join(result.machine.get("cpu_bfloat16_flags") or []) or "none"
    print(f"  cpu: {result.machine.get('cpu')} (bfloat16 flags: {flags})")
    print(f"  cached in {probe_cache_path(home, result.machine)}")
    return 0


def _cmd_hash_password(args) -> int:
    import getpass

    from automl_core.hosting.access import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    print(hash_password(password))
    return 0


COMMANDS = {
    "search": _cmd_search,
    "worker": _cmd_worker,
    "leaderboard": _cmd_leaderboard,
    "filters": _cmd_filters,
    "anomalies": _cmd_anomalies,
    "datasets": _cmd_datasets,
    "export": _cmd_export,
    "precision": _cmd_precision,
    "hash-password": _cmd_hash_password,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one sub-command; bad input exits with status 2 and one line on stderr.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = _build_parser().parse_args(argv)
    _quiet_tensorflow_import()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from automl_core.storage import store

    try:
        return COMMANDS[args.command](args)
    except AutoMLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left early (| head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except OSError as exc:  # a read-only or full runs folder, a missing path
        print(f"error: {file_problem(exc)}", file=sys.stderr)
        return 2
    except store.STORAGE_FAILURES as exc:  # a damaged database met while reading it
        print(
            f"error: {store.storage_error(exc, getattr(args, 'storage', None))}", file=sys.stderr
        )
        return 2
