"""Search strategies: one registry from name to an Optuna sampler, pruner and directions.

Add a strategy with the :func:`register_strategy` decorator on a sampler factory; every
factory takes one :class:`StrategyContext`, so a new strategy that needs more of the search
(the image shape, the epoch budget) reads it from there without changing the others.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd

from automl_core.errors import ConfigError
from automl_core.model.space import DEFAULT_SPACE, SEARCH_SPACE, ModelConfig, SearchSpace
from automl_core.search.controller import ReinforceSampler, controller_probabilities
from automl_core.search.darts import DartsSampler, darts_weights, derived_architecture
from automl_core.search.gp_ucb import GPUCBSampler
from automl_core.search.pruners import PromotingHalvingPruner
from automl_core.search.samplers import CostAwareTPESampler


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may need to build its sampler and pruner.

    Attributes:
        space: The search space.
        seed: Seed of this worker's sampler (None: unseeded): the search's seed plus the
            worker's offset, so that workers propose different points.
        input_shape: One image's (H, W, C), for samplers that weigh a model's cost.
        max_epochs: The epoch budget of one trial, for pruners.
        train_images: Training images per epoch, for time priors. Defaults to 4,000.
        precision: The Keras policy trials train with, so cost models learn from timings
            of that policy. Defaults to ``float32``.
        study_seed: The search's own seed, the same in every worker (None: ``seed``). A
            sampler whose workers must agree on something seeded uses it: the grid's
            shuffled order maps grid ids to configurations, so workers with different
            seeds would train some configurations twice and skip others.
        load_data: ``() -> Dataset``: the worker's split of the study's data, for samplers
            that train something themselves (DARTS' super-network). None where nothing
            will train (the pre-flight check).
        deadline: Unix time at which the study's budget ends (None: no time limit).
    """

    space: SearchSpace
    seed: int | None
    input_shape: tuple[int, int, int]
    max_epochs: int
    train_images: int = 4000
    precision: str = "float32"
    study_seed: int | None = None
    load_data: Callable[[], Any] | None = None
    deadline: float | None = None

    @property
    def shared_seed(self) -> int | None:
        """The seed every worker of the search shares (:attr:`study_seed`, else ``seed``)."""
        return self.seed if self.study_seed is None else self.study_seed


@dataclass(frozen=True)
class StrategyView:
    """Something a strategy learned about a study, beyond its trials (the data step of a view).

    Attributes:
        title: The view's heading.
        frame: Its data.
        chart: The name of the chart that draws it
            (:data:`automl_core.analysis.charts.STRATEGY_CHARTS`), or None to show the table.
    """

    title: str
    frame: pd.DataFrame
    chart: str | None = None


SamplerFactory = Callable[[StrategyContext], optuna.samplers.BaseSampler]
PrunerFactory = Callable[[StrategyContext], optuna.pruners.BasePruner]
ViewsFactory = Callable[[optuna.Study], list[StrategyView]]


def _no_pruning(context: StrategyContext) -> optuna.pruners.BasePruner:
    """Every trial runs all its epochs."""
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class Strategy:
    """One search algorithm: an Optuna sampler, a pruner, and the study's directions.

    Attributes:
        name: The name users type (``--strategy``, the sidebar).
        description: One line for ``--help`` and the sidebar.
        make_sampler: ``(context) -> optuna sampler``.
        make_pruner: ``(context) -> optuna pruner``.
        multi_objective: Whether trials return (val_mse, second objective).
        needs_grid: Whether every parameter must be a list of choices.
        requires: A Python module the strategy imports, checked before the search starts.
        reports_per_epoch: Pruner steps per epoch: 1 reports whole epochs; 3 makes the
            first rungs a third and two thirds of the training images (multi-fidelity).
        views: ``(study) -> [StrategyView]``: what the strategy itself learned (the
            dashboard shows them under the leaderboard), or None.
    """

    name: str
    description: str
    make_sampler: SamplerFactory
    make_pruner: PrunerFactory = _no_pruning
    multi_objective: bool = False
    needs_grid: bool = False
    requires: str | None = None
    reports_per_epoch: int = 1
    views: ViewsFactory | None = None

    @property
    def prunes(self) -> bool:
        """Whether trials report each epoch so the pruner may stop them."""
        return not self.multi_objective

    @property
    def stops_early(self) -> bool:
        """Whether a pruner stops poor trials before their last epoch."""
        return self.prunes and self.make_pruner is not _no_pruning


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(
    name: str,
    description: str,
    make_pruner: PrunerFactory = _no_pruning,
    multi_objective: bool = False,
    needs_grid: bool = False,
    requires: str | None = None,
    reports_per_epoch: int = 1,
    views: ViewsFactory | None = None,
):
    """Decorator that adds a sampler factory ``(context) -> sampler`` to the registry.

    Args:
        name: The strategy's name.
        description: One line shown in ``--help`` and the sidebar.
        make_pruner: ``(context) -> pruner``. Defaults to no pruning.
        multi_objective: Trials return two objectives. Defaults to False.
        needs_grid: Every parameter must be a list of choices. Defaults to False.
        requires: A module that must be importable. Defaults to None.
        reports_per_epoch: Pruner steps per epoch (see :class:`Strategy`). Defaults to 1.
        views: ``(study) -> [StrategyView]`` (see :class:`Strategy`). Defaults to None.

    Returns:
        The decorator, which returns the factory unchanged.
    """

    def add(make_sampler: SamplerFactory) -> SamplerFactory:
        STRATEGIES[name] = Strategy(
            name,
            description,
            make_sampler,
            make_pruner,
            multi_objective,
            needs_grid,
            requires,
            reports_per_epoch,
            views,
        )
        return make_sampler

    return add


def get_strategy(name: str) -> Strategy:
    """The registered strategy of that name.

    Raises:
        ConfigError: The name is not registered, or the strategy's extra is not installed.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    strategy = STRATEGIES[name]
    if strategy.requires and importlib.util.find_spec(strategy.requires) is None:
        raise ConfigError(
            f"strategy {name!r} needs the package {strategy.requires!r}, which is not "
            f"installed; run: pip install {strategy.requires}"
        )
    return strategy


def _hyperband(context: StrategyContext) -> optuna.pruners.BasePruner:
    """Hyperband over epochs, from one epoch to the trial's budget."""
    return optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=context.max_epochs, reduction_factor=3
    )


def _successive_halving(context: StrategyContext) -> optuna.pruners.BasePruner:
    """Asynchronous successive halving from one epoch."""
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


def _tpe(context: StrategyContext) -> optuna.samplers.BaseSampler:
    """TPE with a short random start, modelling parameters jointly.

    Three random trials, not Optuna's ten: a search on two cores often runs only a dozen
    full trials, and the model must start steering early to matter.
    """
    return optuna.samplers.TPESampler(
        seed=context.seed, n_startup_trials=3, multivariate=True, constant_liar=True
    )


def _random(context: StrategyContext) -> optuna.samplers.BaseSampler:
    """Uniform random draws."""
    return optuna.samplers.RandomSampler(seed=context.seed)


def default_space(strategy: str) -> dict[str, list]:
    """The space a search starts from when none is given.

    Args:
        strategy: A registered strategy's name.

    Returns:
        The seeds' 16-configuration grid (:data:`~automl_core.model.space.DEFAULT_SPACE`) for a
        strategy that needs a grid; :data:`~automl_core.model.space.SEARCH_SPACE`, with room in
        depth, width, learning rate, optimizer and the PCA path, for every other.

    Raises:
        ConfigError: The strategy is not registered.
    """

    if strategy not in STRATEGIES:  # an uninstalled extra is get_strategy's to refuse
        get_strategy(strategy)
    chosen = DEFAULT_SPACE if STRATEGIES[strategy].needs_grid else SEARCH_SPACE
    return {name: list(values) for name, values in chosen.items()}


@register_strategy("grid", "every configuration of the grid, each once", needs_grid=True)
def _grid(context: StrategyContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GridSampler(context.space.grid(), seed=context.shared_seed)


register_strategy("random", "configurations drawn uniformly at random")(_random)


def _work_model(context: StrategyContext) -> Callable[[dict], float]:
    """Multiply-accumulates per image of a configuration (0 when it cannot be built)."""
    from automl_core.model.models import architecture_work  # Keras: cost-aware ones only

    def work_of(params: dict) -> float:
        try:
            return architecture_work(ModelConfig(**params), context.input_shape)
        except (ConfigError, ValueError):
            return 0.0  # it cannot be built: the trial fails at once, costing nothing

    return work_of


@register_strategy(
    "tpe-cost", "Bayesian (TPE), improvement per second of training: cheap models first"
)
def _cost_aware_tpe(context: StrategyContext) -> optuna.samplers.BaseSampler:

    return CostAwareTPESampler(
        context.space.distributions(),
        _work_model(context),
        seed=context.seed,
        precision=context.precision,
    )


# the first rung of the multi-fidelity search sees this many training images (about 60
# optimizer steps at batch 64: fewer say little beyond how fast a model leaves the mean
# image): a whole epoch of mnist-5k, a share of a larger data set's images
FIRST_RUNG_IMAGES = 4000
REPORTS_PER_EPOCH = 3


def first_rung_thirds(train_images: int) -> int:
    """The first rung in thirds of an epoch: 1 (a third of the images) to 3 (all of them)."""
    return int(min(REPORTS_PER_EPOCH, max(1, round(3 * FIRST_RUNG_IMAGES / max(1, train_images)))))


def _successive_halving_in_thirds(context: StrategyContext) -> optuna.pruners.BasePruner:
    """Asynchronous successive halving over steps of a third of an epoch.

    The first rung is :data:`FIRST_RUNG_IMAGES` training images (one epoch of mnist-5k, a
    third of one of a data set three times larger), then each rung is three times the last
    (1, 3, 9 epochs on mnist-5k): at each, a trial goes on only while it is among the best
    third of the trials that reached that rung. The first rung is decided only once three
    trials reached it; a trial stopped there and later among the best third is run again
    (:class:`automl_core.search.pruners.PromotingHalvingPruner`).
    """

    return PromotingHalvingPruner(
        min_resource=first_rung_thirds(context.train_images), reduction_factor=3, min_rivals=3
    )


@register_strategy(
    "tpe-cost-asha",
    "multi-fidelity: cost-aware TPE proposals, each first trained on ~4,000 images (a share "
    "of a large data set); at each rung, three times longer than the last, only the best "
    "third goes on training",
    make_pruner=_successive_halving_in_thirds,
    reports_per_epoch=REPORTS_PER_EPOCH,
)
def _cost_aware_tpe_multi_fidelity(context: StrategyContext) -> optuna.samplers.BaseSampler:

    return CostAwareTPESampler(
        context.space.distributions(),
        _work_model(context),
        seed=context.seed,
        n_startup_trials=8,
        fidelity_epochs=first_rung_thirds(context.train_images) / REPORTS_PER_EPOCH,
        train_images=context.train_images,
        precision=context.precision,
    )


register_strategy("tpe", "Bayesian: tree-structured Parzen estimator")(_tpe)


@register_strategy(
    "gp", "Bayesian: Gaussian process (needs PyTorch: pip install torch)", requires="torch"
)
def _gp(context: StrategyContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=context.seed)


register_strategy(
    "hyperband", "TPE proposals, Hyperband stops poor trials early", make_pruner=_hyperband
)(_tpe)
register_strategy(
    "asha",
    "random proposals, asynchronous successive halving stops poor trials early",
    make_pruner=_successive_halving,
)(_random)


@register_strategy(
    "nsga2",
    "multi-objective genetic search: validation MSE against compression (Pareto front)",
    multi_objective=True,
)
def _nsga2(context: StrategyContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=context.seed, population_size=10)


# the architecture-search strategies: GP-UCB, a REINFORCE controller, DARTS
@register_strategy(
    "gp-ucb",
    "Bayesian: Gaussian process with an upper confidence bound (scikit-learn, no PyTorch)",
)
def _gp_ucb(context: StrategyContext) -> optuna.samplers.BaseSampler:

    return GPUCBSampler(context.space.distributions(), seed=context.seed)


def _controller_views(study: optuna.Study) -> list[StrategyView]:
    """The REINFORCE controller's choice probabilities over its updates."""
    return [
        StrategyView(
            "Controller choice probabilities",
            controller_probabilities(study),
            "controller_probabilities",
        )
    ]


@register_strategy(
    "reinforce",
    "REINFORCE controller: an autoregressive policy over the choices, learned by policy "
    "gradient from each trial's -log validation MSE; a range becomes 5 levels (log-spaced for "
    "a log range), a stepped range its values (at most 32)",
    views=_controller_views,
)
def _reinforce(context: StrategyContext) -> optuna.samplers.BaseSampler:

    return ReinforceSampler(context.space, seed=context.seed)


def _darts_views(study: optuna.Study) -> list[StrategyView]:
    """DARTS' architecture weights per cell over epochs, and the derived architecture."""
    views = [StrategyView("Architecture weights per cell", darts_weights(study), "darts_weights")]
    derived = derived_architecture(study)
    if not derived.empty:
        views.append(StrategyView("Derived architecture", derived))
    return views


@register_strategy(
    "darts",
    "differentiable architecture search: a one-shot super-network mixes every kernel_size, "
    "downsample and upsample choice per cell; the strongest are trained from scratch, then "
    "TPE tunes the rest",
    views=_darts_views,
)
def _darts(context: StrategyContext) -> optuna.samplers.BaseSampler:

    return DartsSampler(
        context.space,
        context.input_shape,
        context.max_epochs,
        seed=context.seed,
        load_data=context.load_data,
        precision=context.precision,
        deadline=context.deadline,
    )
