"""DARTS: differentiable architecture search with a one-shot super-network.

Liu et al. (2019) relax the choice of each cell's operation into a softmax-weighted sum of
every candidate, train the network's weights and the architecture weights (``alpha``)
together, and keep each cell's strongest operation. Here the candidates come from the
search space, so that the result is an architecture the normal builder can train:

- every encoder cell ``encoder_i`` mixes one convolution per ``kernel_size`` choice (per
  pair of ``kernel_size`` and ``convolution`` when the space also offers standard, dilated
  or depthwise-separable convolutions: candidates such as ``"5x5 dilated"``) and is
  followed by ``encoder_down_i``, mixing the ``downsample`` choices (max-pool, avg-pool, a
  stride-2 convolution);
- every decoder cell ``decoder_up_i`` mixes the ``upsample`` choices (resize, a stride-2
  transposed convolution) and is followed by ``decoder_i``, mixing the convolutions again.

An identity candidate is not offered: the model builder has no block without a
convolution, and a derived architecture must train as a normal trial.

Every candidate ends in a batch normalisation without scale or offset, as in DARTS (a
weighted sum of candidates would otherwise fade the signal cell by cell). The
super-network has the space's deepest encoder; the other parameters take one reference
value (:func:`reference_values`: a choice's first value, a range's middle). Training is
first-order DARTS: each step updates the weights on a batch of the training split, then
the architecture weights on a batch of the validation split, by reconstruction MSE.

The derived architecture keeps each cell's argmax. The model builder uses one kernel size
and one resampling for every block, so the trial's parameters are the argmax of each
operation parameter's weights averaged over its cells (they agree with every cell's own
argmax whenever the cells agree; the per-cell result is stored for the dashboard).

The search runs in the worker that proposes the study's first trial, inside that trial
(its seconds count toward the trial). Under a time budget it starts no epoch after half of
the time left (:data:`SEARCH_SHARE_OF_TIME`); an epoch-less search keeps each cell's first
candidate. Its result,
with the weights after every epoch, is stored on the study (:data:`DARTS_ATTR`), so a
restarted or second worker reads it instead of searching again; a worker that finds a
search in progress waits for it. That first trial trains the derived architecture from
scratch with the reference values; later trials keep the derived operations and let TPE
tune the other parameters.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from automl_core import limits
from automl_core.errors import ConfigError, StorageError
from automl_core.model import blocks
from automl_core.model.precision import loss_scaled, policy_scope
from automl_core.model.space import PARAMETERS, Choice, Range, SearchSpace
from automl_core.search.samplers import JointSampler
from automl_core.storage.trials import DARTS_ATTR

# the search-space parameters whose values are operations a cell can mix
OPERATION_PARAMETERS = ("kernel_size", "convolution", "downsample", "upsample")
# a convolution cell's parameter when it mixes kernel sizes and kinds of convolution
PAIR_PARAMETER = "kernel_size+convolution"
ARCHITECTURE_LEARNING_RATE = 3e-3
ARCHITECTURE_BETA_1 = 0.5
# a search in progress whose owner has not written for this long is taken over
STALE_SECONDS = 600.0
# share of the time left before a study's deadline the super-network may spend; the rest
# trains the derived architecture and the trials after it
SEARCH_SHARE_OF_TIME = 0.5
# the candidates' batch normalisation: quick to follow, since a search runs few epochs
BATCH_NORM_MOMENTUM = 0.9
WAIT_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Cell:
    """One place of the super-network that mixes candidate operations.

    Attributes:
        name: ``encoder_i``, ``encoder_down_i``, ``decoder_up_i`` or ``decoder_i``.
        parameter: The space's parameter whose values are the candidates.
        choices: The candidates (values of ``parameter``).
    """

    name: str
    parameter: str
    choices: tuple

    @property
    def searched(self) -> bool:
        """Whether there is more than one candidate to choose from."""
        return len(self.choices) > 1


def operation_choices(space: SearchSpace) -> dict[str, tuple]:
    """The values of each operation parameter the super-network can mix.

    ``downsample`` and ``upsample`` count only when the space allows ``block="pool"``
    (``strided`` overrides them).

    Raises:
        ConfigError: No operation parameter has two or more values.
    """
    choices: dict[str, tuple] = {}
    for name in OPERATION_PARAMETERS:
        choices[name] = _values(space, name)
    if "pool" not in _values(space, "block"):
        choices["downsample"] = ("stride",)
        choices["upsample"] = ("transpose",)
    if all(len(v) < 2 for v in choices.values()):
        shown = ", ".join(f"{n}={list(v)}" for n, v in choices.items())
        raise ConfigError(
            f"darts searches operations, but the space has no operation choices ({shown}: "
            "one value each); give two or more values to at least one of "
            f"{', '.join(OPERATION_PARAMETERS)} (e.g. kernel_size=[3, 5]), or pick another "
            "strategy"
        )
    return choices


def _values(space: SearchSpace, name: str) -> tuple:
    """A parameter's values: a choice's list, or every value of an integer range."""
    parameter = space.parameters.get(name)
    if parameter is None:
        return (PARAMETERS[name].default,)
    if isinstance(parameter, Choice):
        return tuple(parameter.values)
    step = int(parameter.step or 1)
    return tuple(range(int(parameter.low), int(parameter.high) + 1, step))


def reference_values(space: SearchSpace) -> dict[str, Any]:
    """The value of every non-operation parameter in the super-network and the first trial.

    A choice's first value, a range's middle (geometric for a log range, on its step),
    the deepest ``num_conv_layers``, and ``block="pool"`` when allowed.
    """
    values: dict[str, Any] = {}
    for name, parameter in space.parameters.items():
        if isinstance(parameter, Choice):
            values[name] = parameter.values[0]
            continue
        low, high = parameter.low, parameter.high
        middle = math.sqrt(low * high) if parameter.log and low > 0 else (low + high) / 2
        if parameter.step:
            middle = low + round((middle - low) / parameter.step) * parameter.step
            middle = min(high, middle)
        values[name] = int(round(middle)) if PARAMETERS[name].kind == "int" else float(middle)
    depth = space.parameters["num_conv_layers"]
    values["num_conv_layers"] = int(depth.high if isinstance(depth, Range) else max(depth.values))
    if "pool" in _values(space, "block"):
        values["block"] = "pool"
    return values


def pair_label(kernel_size: int, convolution: str) -> str:
    """A (kernel size, kind of convolution) candidate as text, e.g. ``"5x5 dilated"``."""
    return f"{int(kernel_size)}x{int(kernel_size)} {convolution}"


def parse_pair(label: str) -> tuple[int, str]:
    """The (kernel size, kind of convolution) of a :func:`pair_label`."""
    size, convolution = label.split(" ", 1)
    return int(size.split("x", 1)[0]), convolution


def _convolution_cell(choices: dict[str, tuple]) -> tuple[str, tuple]:
    """A convolution cell's parameter and candidates: kernel sizes alone, or pairs."""
    if len(choices["convolution"]) < 2:
        return "kernel_size", choices["kernel_size"]
    pairs = tuple(pair_label(k, c) for k in choices["kernel_size"] for c in choices["convolution"])
    return PAIR_PARAMETER, pairs


def supernet_cells(space: SearchSpace) -> list[Cell]:
    """The super-network's cells, encoder first, in the order data flows."""
    choices = operation_choices(space)
    depth = reference_values(space)["num_conv_layers"]
    conv_parameter, conv_choices = _convolution_cell(choices)
    cells = []
    for i in range(1, depth + 1):
        cells.append(Cell(f"encoder_{i}", conv_parameter, conv_choices))
        cells.append(Cell(f"encoder_down_{i}", "downsample", choices["downsample"]))
    for i in range(depth, 0, -1):
        cells.append(Cell(f"decoder_up_{i}", "upsample", choices["upsample"]))
        cells.append(Cell(f"decoder_{i}", conv_parameter, conv_choices))
    return cells


def _convolution_of(cell: Cell, choice: Any, reference: dict[str, Any]) -> tuple[int, str]:
    """The (kernel size, kind) of a convolution cell's candidate."""
    if cell.parameter == PAIR_PARAMETER:
        return parse_pair(choice)
    return int(choice), reference.get("convolution", "standard")


def _bottleneck(input_shape: tuple[int, int, int], depth: int) -> tuple[int, int]:
    """Height and width after ``depth`` halvings (rounding up)."""
    height, width = int(input_shape[0]), int(input_shape[1])
    for _ in range(depth):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


def supernet_parameters(space: SearchSpace, input_shape: tuple[int, int, int]) -> int:
    """The super-network's parameter count (every candidate at once), without building it."""
    reference = reference_values(space)
    f, latent, depth = reference["filters"], reference["latent_dim"], reference["num_conv_layers"]
    k_ref, channels = reference["kernel_size"], int(input_shape[2])
    total = 0
    for cell in supernet_cells(space):
        total += len(cell.choices)  # the architecture weights
        for choice in cell.choices:
            if cell.parameter in ("kernel_size", PAIR_PARAMETER):
                inputs = channels if cell.name == "encoder_1" else f
                k, kind = _convolution_of(cell, choice, reference)
                total += blocks.CONVOLUTIONS[kind].parameters(k, inputs, f)
            elif choice in ("stride", "transpose"):
                total += k_ref * k_ref * f * f + f
            total += 2 * f  # the candidate's normalisation statistics (mean, variance)
    height, width = _bottleneck(input_shape, depth)
    flat = height * width * f
    total += (flat * latent + latent) + (latent * flat + flat)
    return total + k_ref * k_ref * f * channels + channels


def check_supernet_fits(space: SearchSpace, input_shape: tuple[int, int, int]) -> int:
    """Refuses a super-network larger than ``max_model_parameters``.

    Returns:
        Its parameter count.

    Raises:
        ConfigError: It is too large; the message names the count, the values and the limit.
    """
    size = supernet_parameters(space, input_shape)
    limit = limits.get("max_model_parameters")
    if size > limit:
        reference = reference_values(space)
        height, width, channels = (int(d) for d in input_shape)
        raise ConfigError(
            f"darts: the super-network holds every candidate operation of every cell at "
            f"once, {size:,} parameters with filters={reference['filters']}, "
            f"latent_dim={reference['latent_dim']} and "
            f"num_conv_layers={reference['num_conv_layers']} on {height}x{width}x{channels} "
            f"images, more than the {limit:,} allowed (AUTOML_MAX_MODEL_PARAMETERS); give "
            "fewer kernel_size / downsample / upsample choices, fewer filters or layers"
        )
    return size


@functools.cache
def _mixed_operation_class():
    """The Keras layer that mixes candidates (defined lazily: Keras loads only when used)."""
    import keras

    class MixedOperation(keras.layers.Layer):
        """A softmax-weighted sum of candidate layers, weighted by trainable ``alpha``."""

        def __init__(self, candidates: list, **kwargs) -> None:
            super().__init__(**kwargs)
            self.candidates = candidates
            self.alpha = self.add_weight(
                shape=(len(candidates),), initializer="zeros", name="alpha"
            )

        def call(self, x):
            if len(self.candidates) == 1:
                return self.candidates[0](x)
            weights = keras.ops.softmax(self.alpha)
            outputs = [op(x) for op in self.candidates]
            # the architecture weights stay float32; each output is in the compute dtype
            outputs = [keras.ops.cast(weights[i], y.dtype) * y for i, y in enumerate(outputs)]
            return functools.reduce(lambda a, b: a + b, outputs)

    return MixedOperation


def _candidate(cell: Cell, choice: Any, reference: dict[str, Any], index: int):
    """The Keras layers of one candidate operation of a cell.

    As in DARTS, every candidate ends in a batch normalisation without scale or offset:
    a softmax-weighted sum of independent outputs has a smaller variance than each, and
    over several mixed cells the signal would otherwise fade until the super-network only
    learns the mean image.
    """
    import keras
    from keras import layers

    f, act, k = reference["filters"], reference["activation"], reference["kernel_size"]
    name = f"{cell.name}_{index}"
    if cell.parameter in ("kernel_size", PAIR_PARAMETER):
        size, kind = _convolution_of(cell, choice, reference)
        op, activate = blocks.CONVOLUTIONS[kind].make(f, size, 1, None, f"{name}_op"), True
    elif choice == "max-pool":
        op, activate = layers.MaxPooling2D(2, padding="same", name=f"{name}_op"), False
    elif choice == "avg-pool":
        op, activate = layers.AveragePooling2D(2, padding="same", name=f"{name}_op"), False
    elif choice == "stride":
        op = layers.Conv2D(f, k, strides=2, padding="same", name=f"{name}_op")
        activate = True
    elif choice == "resize":
        op, activate = layers.UpSampling2D(2, name=f"{name}_op"), False
    elif choice == "transpose":
        op = layers.Conv2DTranspose(f, k, strides=2, padding="same", name=f"{name}_op")
        activate = True
    else:
        raise ConfigError(f"darts has no operation for {cell.parameter}={choice!r}")
    steps = [
        op,
        layers.BatchNormalization(
            center=False, scale=False, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn"
        ),
    ]
    if activate:
        steps.append(layers.Activation(act, name=f"{name}_act"))
    return keras.Sequential(steps, name=name)


def build_supernet(space: SearchSpace, input_shape: tuple[int, int, int]):
    """The one-shot super-network of a space.

    Args:
        space: The search space (its operation choices and reference values).
        input_shape: One image's (H, W, C).

    Returns:
        ``(model, mixed)``: the autoencoder super-network and its mixing layers by cell name.

    Raises:
        ConfigError: No operation choices, or the super-network is too large.
    """
    import keras
    from keras import layers

    check_supernet_fits(space, input_shape)
    reference = reference_values(space)
    mixed_class = _mixed_operation_class()
    height, width, channels = (int(d) for d in input_shape)
    image = keras.Input((height, width, channels), name="supernet_input")
    mixed: dict[str, Any] = {}
    x = image
    cells = supernet_cells(space)
    encoder, decoder = cells[: len(cells) // 2], cells[len(cells) // 2 :]
    for cell in encoder:
        candidates = [_candidate(cell, c, reference, i) for i, c in enumerate(cell.choices)]
        mixed[cell.name] = mixed_class(candidates, name=cell.name)
        x = mixed[cell.name](x)
    feature_shape = tuple(int(d) for d in x.shape[1:])
    x = layers.Flatten(name="supernet_flatten")(x)
    x = layers.Dense(reference["latent_dim"], name="supernet_latent")(x)
    x = layers.Dense(
        math.prod(feature_shape), activation=reference["activation"], name="supernet_dense"
    )(x)
    x = layers.Reshape(feature_shape, name="supernet_reshape")(x)
    for cell in decoder:
        candidates = [_candidate(cell, c, reference, i) for i, c in enumerate(cell.choices)]
        mixed[cell.name] = mixed_class(candidates, name=cell.name)
        x = mixed[cell.name](x)
    dh, dw = int(x.shape[1]) - height, int(x.shape[2]) - width
    if dh or dw:
        x = layers.Cropping2D(((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)))(x)
    out = layers.Conv2D(
        channels,
        reference["kernel_size"],
        padding="same",
        activation="sigmoid",
        name="supernet_reconstruction",
        dtype="float32",  # the output and the loss stay float32 under a mixed policy
    )(x)
    return keras.Model(image, out, name="supernet"), mixed


@dataclass(frozen=True)
class DartsResult:
    """What a DARTS search found, stored on the study.

    Attributes:
        cells: Per cell (in data-flow order): ``{"name", "parameter", "choices",
            "weights"}``, ``weights`` holding the softmax of its architecture weights
            before training (epoch 0) and after every epoch.
        derived: Each searched cell's strongest operation (the argmax of its last weights).
        params: The trial parameters of the derived architecture (see the module docs).
        val_mse: The super-network's validation MSE after every epoch.
        seconds: Seconds the search took.
        done: Whether the search finished (False while it runs).
        trial: The trial that trains the derived architecture with the reference values.
    """

    cells: list[dict[str, Any]]
    derived: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    val_mse: list[float] = field(default_factory=list)
    seconds: float = 0.0
    done: bool = False
    trial: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DartsResult:
        """Reads :meth:`to_dict` output back."""
        return cls(**values)


def derive(cells: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The derived architecture of the cells' last weights.

    Returns:
        ``(derived, params)``: each searched cell's argmax, and per operation parameter the
        argmax of its cells' mean weights.
    """
    derived = {
        c["name"]: c["choices"][int(np.argmax(c["weights"][-1]))]
        for c in cells
        if len(c["choices"]) > 1
    }
    params: dict[str, Any] = {}
    for parameter in OPERATION_PARAMETERS:
        mine = [c for c in cells if c["parameter"] == parameter and len(c["choices"]) > 1]
        if mine:
            mean = np.mean([c["weights"][-1] for c in mine], axis=0)
            params[parameter] = mine[0]["choices"][int(np.argmax(mean))]
    pairs = [c for c in cells if c["parameter"] == PAIR_PARAMETER]
    if pairs:  # each of the two parameters: the value whose candidates weigh most in sum
        mean = np.mean([c["weights"][-1] for c in pairs], axis=0)
        parsed = [parse_pair(label) for label in pairs[0]["choices"]]
        for position, parameter in enumerate(("kernel_size", "convolution")):
            totals: dict[Any, float] = {}
            for pair, weight in zip(parsed, mean, strict=True):
                totals[pair[position]] = totals.get(pair[position], 0.0) + float(weight)
            params[parameter] = max(totals, key=totals.get)
    if "downsample" in params or "upsample" in params:
        params["block"] = "pool"
    return derived, params


def search_architecture(
    space: SearchSpace,
    dataset,
    epochs: int,
    seed: int = 0,
    deadline: float | None = None,
    on_epoch: Callable[[DartsResult], None] | None = None,
    precision: str = "float32",
) -> DartsResult:
    """Trains the super-network (first-order DARTS) and derives the architecture.

    Args:
        space: The search space.
        dataset: A :class:`automl_core.model.datasets.Dataset`; weights learn on its training
            split, architecture weights on its validation split.
        epochs: Passes over the training split.
        seed: Seed of initialisation and shuffling. Defaults to 0.
        deadline: Unix time after which no new epoch starts. Defaults to None.
        on_epoch: Called with the partial result after every epoch. Defaults to None.
        precision: The Keras policy of the super-network's training (its variables and
            architecture weights stay float32). Defaults to ``float32``.

    Returns:
        The finished result.

    Raises:
        ConfigError: No operation choices, or the super-network is too large.
    """
    import keras
    import tensorflow as tf

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got epochs={epochs!r}")
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    with policy_scope(precision):
        model, mixed = build_supernet(space, dataset.input_shape)
    reference = reference_values(space)
    # a cell with one candidate has nothing to learn: its alpha stays out of both steps
    alpha_ids = {id(layer.alpha) for layer in mixed.values()}
    alphas = [layer.alpha for layer in mixed.values() if len(layer.candidates) > 1]
    weights = [v for v in model.trainable_variables if id(v) not in alpha_ids]
    weight_optimizer = loss_scaled(
        keras.optimizers.Adam(float(reference["learning_rate"])), precision
    )
    alpha_optimizer = loss_scaled(
        keras.optimizers.Adam(ARCHITECTURE_LEARNING_RATE, beta_1=ARCHITECTURE_BETA_1), precision
    )
    weight_optimizer.build(weights)
    alpha_optimizer.build(alphas)

    def step(images, variables, optimizer):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(images, training=True) - images))
            scaled = optimizer.scale_loss(loss)  # unscaled again by apply_gradients
        optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return loss

    weight_step = tf.function(lambda x: step(x, weights, weight_optimizer))
    alpha_step = tf.function(lambda x: step(x, alphas, alpha_optimizer))
    cells = supernet_cells(space)
    records = [
        {"name": c.name, "parameter": c.parameter, "choices": list(c.choices), "weights": []}
        for c in cells
    ]

    def snapshot() -> None:
        for record in records:
            alpha = keras.ops.convert_to_numpy(mixed[record["name"]].alpha)
            soft = np.exp(alpha - alpha.max())
            record["weights"].append([float(v) for v in soft / soft.sum()])

    snapshot()
    rng = np.random.default_rng(seed)
    x_train, x_val = dataset.x_train, dataset.x_val
    batch = max(1, min(int(reference["batch_size"]), len(x_train)))
    val_mse: list[float] = []
    for _ in range(epochs):
        if deadline is not None and time.time() >= deadline:
            break
        order = rng.permutation(len(x_train))
        val_order = rng.permutation(len(x_val))
        for b in range(max(1, len(x_train) // batch)):
            weight_step(tf.constant(x_train[order[b * batch : (b + 1) * batch]]))
            # the architecture learns on validation batches of the same size, cycling
            picked = val_order[np.arange(b * batch, (b + 1) * batch) % len(x_val)]
            alpha_step(tf.constant(x_val[picked]))
        snapshot()
        out = np.concatenate(
            [
                keras.ops.convert_to_numpy(model(x_val[s : s + 256], training=False))
                for s in range(0, len(x_val), 256)
            ]
        )
        val_mse.append(float(np.mean((out - x_val) ** 2)))
        if on_epoch is not None:
            on_epoch(DartsResult(records, val_mse=list(val_mse)))
    derived, params = derive(records)
    keras.backend.clear_session()
    return DartsResult(records, derived, params, val_mse, time.perf_counter() - started, done=True)


class DartsSampler(JointSampler):
    """Runs the DARTS search once per study, then proposes its derived architecture.

    Args:
        space: The search space.
        input_shape: One image's (H, W, C) (to check the super-network's size).
        epochs: Epochs of the super-network's training.
        seed: Seed of the search and of the TPE that tunes the other parameters.
        load_data: ``() -> Dataset``: the data the super-network trains on (the worker's
            split of the study's data). Needed once it trains; the pre-flight check builds
            the sampler without it.
        precision: The Keras policy of the super-network's training. Defaults to
            ``float32``.
        deadline: Unix time at which the study's budget ends; the super-network takes its
            share of the time left (:data:`SEARCH_SHARE_OF_TIME`). Defaults to None.

    Building the sampler never fails (every strategy builds from every space); the
    search's pre-flight calls :meth:`preflight`, which refuses a space DARTS cannot search.
    """

    def __init__(
        self,
        space: SearchSpace,
        input_shape: tuple[int, int, int],
        epochs: int,
        seed: int | None = None,
        load_data: Callable[[], Any] | None = None,
        precision: str = "float32",
        deadline: float | None = None,
    ) -> None:
        # every free parameter: the operations come from the search, the rest from TPE
        super().__init__(
            {n: d for n, d in space.distributions().items() if not d.single()},
            seed,
            fallback=optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=3, multivariate=True, constant_liar=True
            ),
        )
        self._search_space = space
        self._input_shape = tuple(int(d) for d in input_shape)
        self._reference = reference_values(space)
        self._epochs = int(epochs)
        self._search_seed = 0 if seed is None else int(seed)
        self._load_data = load_data
        self._precision = precision
        self._deadline = deadline

    def preflight(self) -> None:
        """Checks, before anything trains, that DARTS can search this space.

        Raises:
            ConfigError: The space has no operation choices, or the super-network (every
                candidate at once) is larger than ``max_model_parameters``.
        """
        operation_choices(self._search_space)
        check_supernet_fits(self._search_space, self._input_shape)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The derived operations, with the reference values (first trial) or TPE's."""
        if not search_space:
            return {}
        self.preflight()
        result = self.result(study, trial.number)
        fixed = {n: v for n, v in result.params.items() if n in search_space}
        rest = {n: d for n, d in search_space.items() if n not in fixed}
        if result.trial == trial.number:
            return {**{n: self._reference[n] for n in rest}, **fixed}
        return {**self._fallback.sample_relative(study, trial, rest), **fixed}

    def result(self, study: optuna.Study, number: int | None = None) -> DartsResult:
        """The study's DARTS result: stored, awaited from another worker, or searched now.

        Args:
            study: The study.
            number: The trial asking (it trains the derived architecture when this call
                runs the search). Defaults to None.

        Returns:
            The finished result.
        """

        while True:
            stored = stored_result(study)
            if stored is not None and stored.done:
                return stored
            progress = study.user_attrs.get(DARTS_ATTR) or {}
            if stored is None or time.time() - progress.get("updated", 0) > STALE_SECONDS:
                break
            time.sleep(WAIT_POLL_SECONDS)  # another worker is searching

        def publish(partial: DartsResult) -> None:
            study.set_user_attr(DARTS_ATTR, {**partial.to_dict(), "updated": time.time()})

        if self._load_data is None:
            raise ConfigError("the DARTS sampler was built without its data (load_data)")
        publish(DartsResult([], trial=number))
        try:
            found = search_architecture(
                self._search_space,
                self._load_data(),
                self._epochs,
                self._search_seed,
                deadline=_search_deadline(self._deadline),
                on_epoch=lambda partial: publish(
                    DartsResult(partial.cells, val_mse=partial.val_mse, trial=number)
                ),
                precision=self._precision,
            )
        except BaseException:
            # no claim left behind: the next worker searches instead of waiting for it
            study.set_user_attr(DARTS_ATTR, None)
            raise
        result = DartsResult(
            found.cells, found.derived, found.params, found.val_mse, found.seconds, True, number
        )
        publish(result)
        return result


def _search_deadline(study_deadline: float | None) -> float | None:
    """When the super-network stops: after its share of the time left to the study."""
    if study_deadline is None:
        return None
    now = time.time()
    return now + max(0.0, study_deadline - now) * SEARCH_SHARE_OF_TIME


def stored_result(study: optuna.Study) -> DartsResult | None:
    """The DARTS result (finished or in progress) stored on a study, or None."""
    stored = study.user_attrs.get(DARTS_ATTR)
    if not isinstance(stored, dict):
        return None
    try:
        return DartsResult.from_dict({k: v for k, v in stored.items() if k != "updated"})
    except TypeError as exc:
        raise StorageError(f"study {study.study_name!r} holds a damaged DARTS result") from exc


def darts_weights(study: optuna.Study) -> pd.DataFrame:
    """The architecture weights of every searched cell after every epoch (heatmap data).

    Args:
        study: A study searched with ``darts`` (the search may still run).

    Returns:
        Columns ``cell``, ``parameter``, ``choice`` (text), ``epoch`` (0: before
        training), ``weight``; empty before the search has started.
    """
    result = stored_result(study)
    rows = [
        {
            "cell": cell["name"],
            "parameter": cell["parameter"],
            "choice": str(choice),
            "epoch": epoch,
            "weight": float(weights[index]),
        }
        for cell in (result.cells if result else [])
        if len(cell["choices"]) > 1
        for epoch, weights in enumerate(cell["weights"])
        for index, choice in enumerate(cell["choices"])
    ]
    return pd.DataFrame(rows, columns=["cell", "parameter", "choice", "epoch", "weight"])


def _trained(params: dict[str, Any], parameter: str) -> str:
    """The value the trials use for a cell's parameter, as text."""
    if parameter == PAIR_PARAMETER and "kernel_size" in params:
        return pair_label(params["kernel_size"], params.get("convolution", "standard"))
    return str(params.get(parameter, ""))


def derived_architecture(study: optuna.Study) -> pd.DataFrame:
    """The derived architecture: each searched cell's strongest operation and its weight.

    Returns:
        Columns ``cell``, ``parameter``, ``choice`` (text), ``weight``, ``trained`` (the
        value the trials use for that parameter); empty until the search has finished.
    """
    result = stored_result(study)
    rows = []
    if result is not None and result.done:
        for cell in result.cells:
            if len(cell["choices"]) < 2:
                continue
            last = cell["weights"][-1]
            best = int(np.argmax(last))
            rows.append(
                {
                    "cell": cell["name"],
                    "parameter": cell["parameter"],
                    "choice": str(cell["choices"][best]),
                    "weight": float(last[best]),
                    "trained": _trained(result.params, cell["parameter"]),
                }
            )
    return pd.DataFrame(rows, columns=["cell", "parameter", "choice", "weight", "trained"])
