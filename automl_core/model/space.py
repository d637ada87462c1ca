"""Search spaces: what to try. Each parameter is a list of choices or a numeric range.

A space reads from a dict, a JSON / YAML file or command-line text, is validated against the
image size, and turns an Optuna trial into a :class:`ModelConfig`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from automl_core import limits
from automl_core.errors import ConfigError
from automl_core.model.blocks import CONVOLUTIONS, DOWNSAMPLING, UPSAMPLING

ACTIVATIONS = ("relu", "elu", "selu", "gelu", "leaky_relu", "swish", "sigmoid", "tanh")
# optimizer name -> (the keras.optimizers class, its options)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "nadam": ("Nadam", {}),
    "rmsprop": ("RMSprop", {}),
    "sgd": ("SGD", {}),
    "lion": ("Lion", {}),
}
# the optimizers the weight_decay row acts on (decoupled decay, as Keras applies it)
WEIGHT_DECAY_OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class ParameterSpec:
    """One search-space parameter: everything parsing, the CLI, the sidebar and the cost
    model need to know about it.

    Attributes:
        name: The parameter's name (a :class:`ModelConfig` field, a CLI flag, a space key).
        kind: ``int``, ``float`` (positive numbers, may be a range), ``bool`` or ``choice``
            (one of ``allowed``).
        default: The value a space that omits the parameter uses.
        grid: The choices of the default search space (the original grid).
        offered: The values the dashboard's sidebar offers.
        label: A short human name for widgets and tables.
        help: One line: what the parameter changes.
        allowed: For ``choice``: the valid values. Defaults to None.
        maximum: For ``int`` / ``float``: the largest accepted value, so a typo cannot ask
            for a model that exhausts memory. Defaults to None (no cap).
        allow_zero: For ``int`` / ``float``: 0 is valid too (an option that can be off).
            Defaults to False.
        log: Ranges of this parameter are sampled on a log scale. Defaults to False.
        rangeable: The sidebar offers it as a range as well as choices. Defaults to False.
        costly: It changes a model's work per image (the cost model reads these). Defaults
            to False.
        group: The sidebar section it is shown in. Defaults to "Model".
        searched: The choices of the default space of every strategy but grid search
            (:data:`SEARCH_SPACE`), where the grid's are too few for a model-based or
            multi-fidelity search. Defaults to None: the grid's.
        when: ``(parameter, values)``: the parameter acts on a configuration only when that
            other parameter takes one of these values (``noise`` only when ``objective`` is
            ``denoising``); see :func:`active_parameters`. Defaults to None: it always acts.
        short: A short name for narrow tables (the CLI's leaderboard). Defaults to "": the
            name.
    """

    name: str
    kind: str
    default: Any
    grid: tuple
    offered: tuple
    label: str
    help: str
    allowed: tuple | None = None
    maximum: float | None = None
    allow_zero: bool = False
    log: bool = False
    rangeable: bool = False
    costly: bool = False
    group: str = "Model"
    searched: tuple | None = None
    when: tuple[str, tuple] | None = None
    short: str = ""

    @property
    def numeric(self) -> bool:
        """Whether the parameter may be a numeric range."""
        return self.kind in ("int", "float")

    @property
    def abbreviation(self) -> str:
        """The short name for narrow tables (the name when it has none)."""
        return self.short or self.name

    def acts_on(self, config: Mapping[str, Any]) -> bool:
        """Whether the parameter changes the model or its training under ``config`` (a
        configuration's values by name; a missing one counts as its default)."""
        if self.when is None:
            return True
        other, values = self.when
        return config.get(other, PARAMETERS[other].default) in values


def _resampling(direction: str) -> tuple[str, ...]:

    return tuple(DOWNSAMPLING if direction == "down" else UPSAMPLING)


def _convolutions() -> tuple[str, ...]:

    return tuple(CONVOLUTIONS)


# The parameter table: one row per parameter. Adding a parameter means adding a row here
# and reading it in the model builder (automl_core.model.models) or training.
# fmt: off
PARAMETERS: dict[str, ParameterSpec] = {
    p.name: p
    for p in (
        ParameterSpec(
            "num_conv_layers", "int", 2, (1, 2), (1, 2, 3, 4), "Conv layers",
            "convolution + downsampling blocks in the encoder (and the decoder)",
            maximum=8, costly=True, searched=(1, 2, 3),
            short="layers",
        ),
        ParameterSpec(
            "filters", "int", 16, (16, 32), (4, 8, 16, 32, 64), "Filters",
            "filters of every convolution block", maximum=1024, rangeable=True, costly=True,
            searched=(16, 32, 64),
            short="filt",
        ),
        ParameterSpec(
            "activation", "choice", "relu", ("relu", "sigmoid"), ACTIVATIONS, "Activation",
            "activation of the hidden layers", allowed=ACTIVATIONS,
            searched=("relu", "elu", "gelu"),
            short="act",
        ),
        ParameterSpec(
            "latent_dim", "int", 16, (8, 16), (2, 4, 8, 16, 32, 64, 128), "Latent dim",
            "size of the bottleneck vector", maximum=4096, rangeable=True, costly=True,
            short="latent",
        ),
        ParameterSpec(
            "kernel_size", "int", 3, (3,), (3, 5, 7), "Kernel size",
            "side of the square convolution kernels", maximum=15, costly=True,
            short="kernel",
        ),
        ParameterSpec(
            "learning_rate", "float", 1e-3, (1e-3,), (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
            "Learning rate", "initial learning rate", log=True, rangeable=True, group="Training",
            searched=(3e-4, 1e-3, 3e-3),
            short="lr",
        ),
        ParameterSpec(
            "batch_size", "int", 64, (64,), (16, 32, 64, 128), "Batch size",
            "images per training step", maximum=4096, group="Training", searched=(32, 64),
            short="batch",
        ),
        ParameterSpec(
            "optimizer", "choice", "adam", ("adam",), tuple(OPTIMIZERS), "Optimizer",
            "the optimizer", allowed=tuple(OPTIMIZERS), group="Training",
            searched=("adam", "adamw"),
            short="opt",
        ),
        ParameterSpec(
            "block", "choice", "pool", ("pool",), ("pool", "strided"), "Block",
            "pool: downsample and upsample as set; strided: shorthand for stride / transpose",
            allowed=("pool", "strided"), costly=True, group="Blocks",
        ),
        ParameterSpec(
            "downsample", "choice", "max-pool", ("max-pool",), _resampling("down"),
            "Downsampling", "how each encoder block halves the image",
            allowed=_resampling("down"), costly=True, group="Blocks",
            when=("block", ("pool",)), short="down",
        ),
        ParameterSpec(
            "upsample", "choice", "resize", ("resize",), _resampling("up"), "Upsampling",
            "how each decoder block doubles it: resize + convolution (no checkerboard "
            "artefacts) or transposed convolution", allowed=_resampling("up"), costly=True, group="Blocks",
            when=("block", ("pool",)), short="up",
        ),
        ParameterSpec(
            "convolution", "choice", "standard", ("standard",), _convolutions(),
            "Convolution", "standard, dilated (rate 2) or depthwise-separable convolutions",
            allowed=_convolutions(), costly=True, group="Blocks",
            short="conv",
        ),
        ParameterSpec(
            "batch_norm", "bool", False, (False,), (False, True), "Batch norm",
            "batch normalisation after each convolution", costly=True, group="Blocks",
            short="bn",
        ),
        ParameterSpec(
            "residual", "bool", False, (False,), (False, True), "Residual",
            "residual blocks: a second convolution and a skip connection", costly=True, group="Blocks",
            short="resid",
        ),
        ParameterSpec(
            "attention", "bool", False, (False,), (False, True), "Attention",
            "self-attention over the bottleneck's positions", costly=True, group="Blocks",
            short="attn",
        ),
        ParameterSpec(
            "dropout", "float", 0.0, (0.0,), (0.0, 0.1, 0.2, 0.3), "Dropout",
            "dropout rate after each encoder block", maximum=0.9, allow_zero=True, group="Blocks",
            short="drop",
        ),
        ParameterSpec(
            "linear_path", "bool", False, (False,), (False, True), "PCA path",
            "a linear path beside the convolutions, initialised from PCA of the training "
            "images: training starts at PCA's error and the convolutions learn what a "
            "linear map misses", costly=True, group="Blocks", searched=(False, True),
            short="pca_path",
        ),
        ParameterSpec(
            "bottleneck", "choice", "dense", ("dense",), ("dense", "conv"), "Bottleneck",
            "dense layer, or fully convolutional (a 1x1 convolution; latent_dim must be a "
            "multiple of the bottleneck's positions)", allowed=("dense", "conv"), costly=True, group="Blocks",
            short="bneck",
        ),
        ParameterSpec(
            "objective", "choice", "plain", ("plain",),
            ("plain", "denoising", "variational", "sparse"), "Objective",
            "plain reconstruction; denoising (noisy inputs, clean targets); variational (a "
            "VAE, KL weighted by kl_weight); sparse (an L1 penalty on the code)",
            allowed=("plain", "denoising", "variational", "sparse"), group="Objective and loss",
            short="obj",
        ),
        ParameterSpec(
            "noise", "float", 0.2, (0.2,), (0.1, 0.2, 0.3, 0.5), "Noise",
            "denoising: the Gaussian noise's standard deviation, or the share of masked "
            "values", maximum=1.0, group="Objective and loss",
            when=("objective", ("denoising",)),
        ),
        ParameterSpec(
            "noise_type", "choice", "gaussian", ("gaussian",), ("gaussian", "masking"),
            "Noise type", "denoising: additive Gaussian noise or masking (values set to 0)",
            allowed=("gaussian", "masking"), group="Objective and loss",
            when=("objective", ("denoising",)), short="noise_t",
        ),
        ParameterSpec(
            "kl_weight", "float", 1.0, (1.0,), (0.1, 0.5, 1.0, 2.0), "KL weight",
            "variational: weight of the KL divergence to the prior", maximum=1000.0,
            rangeable=True, log=True, group="Objective and loss",
            when=("objective", ("variational",)), short="kl",
        ),
        ParameterSpec(
            "sparsity", "float", 1e-4, (1e-4,), (1e-5, 1e-4, 1e-3), "Sparsity",
            "sparse: weight of the L1 penalty on the code", maximum=10.0, log=True, group="Objective and loss",
            when=("objective", ("sparse",)), short="sparse",
        ),
        ParameterSpec(
            "loss", "choice", "mse", ("mse",), ("mse", "bce", "l1", "mse_ssim", "psnr"), "Loss",
            "training loss: mean squared error, binary cross-entropy, L1, MSE mixed with "
            "1 - SSIM, or psnr (each image's PSNR, as reported: its weights are kept at the "
            "epoch of best validation PSNR); validation MSE ranks trials whatever the loss",
            allowed=("mse", "bce", "l1", "mse_ssim", "psnr"), group="Objective and loss",
        ),
        ParameterSpec(
            "ssim_weight", "float", 0.5, (0.5,), (0.25, 0.5, 0.75), "SSIM weight",
            "mse_ssim: the share of 1 - SSIM in the loss", maximum=1.0, allow_zero=True, group="Objective and loss",
            when=("loss", ("mse_ssim",)), short="ssim_w",
        ),
        ParameterSpec(
            "schedule", "choice", "constant", ("constant",),
            ("constant", "step", "cosine", "one_cycle"), "LR schedule",
            "learning-rate schedule after the warm-up",
            allowed=("constant", "step", "cosine", "one_cycle"), group="Training",
            searched=("constant", "cosine"),
            short="sched",
        ),
        ParameterSpec(
            "warmup_epochs", "int", 0, (0,), (0, 1, 2, 5), "Warm-up epochs",
            "epochs of linear learning-rate warm-up", maximum=100, allow_zero=True, group="Training",
            short="warmup",
        ),
        ParameterSpec(
            "momentum", "float", 0.9, (0.9,), (0.0, 0.5, 0.9, 0.99), "Momentum",
            "sgd: momentum of the updates (0: plain gradient descent)", maximum=0.999,
            allow_zero=True, group="Training",
            when=("optimizer", ("sgd",)), short="mom",
        ),
        ParameterSpec(
            "weight_decay", "float", 0.004, (0.004,), (0.0, 1e-4, 0.004, 0.04), "Weight decay",
            "adamw and sgd: decoupled weight decay, each step shrinks the weights by "
            "learning rate x this (0: off; 0.004 is Keras's AdamW default)", maximum=1.0,
            allow_zero=True, group="Training",
            when=("optimizer", WEIGHT_DECAY_OPTIMIZERS), short="wd",
        ),
        ParameterSpec(
            "clip_norm", "float", 0.0, (0.0,), (0.0, 1.0, 5.0), "Clip norm",
            "clip each gradient to this norm (0: off)", maximum=1e6, allow_zero=True, group="Training",
            short="clip",
        ),
        ParameterSpec(
            "augment", "bool", False, (False,), (False, True), "Augment",
            "light augmentation while training: random flips, shifts up to a tenth of a side", group="Training",
        ),
        ParameterSpec(
            "rotation", "float", 0.0, (0.0,), (0.0, 5.0, 10.0, 20.0), "Rotation (degrees)",
            "augmentation: random rotations of up to this many degrees", maximum=180.0,
            allow_zero=True, group="Training",
            short="rot",
        ),
        ParameterSpec(
            "crop", "float", 0.0, (0.0,), (0.0, 0.1, 0.2), "Crop",
            "augmentation: random crops of up to this share of each side, resized back to "
            "the image's size", maximum=0.5, allow_zero=True, group="Training",
        ),
        ParameterSpec(
            "color_jitter", "float", 0.0, (0.0,), (0.0, 0.1, 0.2), "Brightness / contrast",
            "augmentation: random brightness shifts and contrast changes of up to this "
            "share", maximum=1.0, allow_zero=True, group="Training",
            short="jitter",
        ),
    )
}
# fmt: on
# The seeds' grid: grid search's default space (16 configurations).
DEFAULT_SPACE: dict[str, Any] = {name: list(p.grid) for name, p in PARAMETERS.items()}
# The default space of every other strategy: room where it matters (depth, width,
# activation, learning rate, batch size, optimizer, the PCA path, the schedule).
SEARCH_SPACE: dict[str, Any] = {
    name: list(p.searched if p.searched is not None else p.grid) for name, p in PARAMETERS.items()
}


def active_parameters(config: Mapping[str, Any]) -> list[str]:
    """The parameters that act on a configuration, in table order.

    A parameter with a ``when`` condition (:class:`ParameterSpec`) acts only when the other
    parameter takes one of its values: ``noise`` and ``noise_type`` only for the denoising
    objective, ``kl_weight`` only for the variational one, ``sparsity`` only for the sparse
    one, ``ssim_weight`` only with the ``mse_ssim`` loss, ``momentum`` only with SGD,
    ``weight_decay`` only with AdamW and SGD, ``downsample`` / ``upsample`` only with
    ``block="pool"``. Every other parameter always acts.

    Args:
        config: A configuration's values by name (a missing one counts as its default).

    Returns:
        The names of the parameters that change the model or its training.
    """
    return [name for name, spec in PARAMETERS.items() if spec.acts_on(config)]


def parameter_label(name: str) -> str:
    """A parameter's display name from its row of :data:`PARAMETERS` (the name itself for a
    parameter the table does not know, e.g. one of a study made elsewhere)."""
    spec = PARAMETERS.get(name)
    return spec.label if spec is not None else name


def _config_to_dict(self) -> dict[str, Any]:
    """The configuration as a JSON-ready dict."""
    return asdict(self)


def _config_from_dict(cls, values: dict[str, Any]):
    """Builds a configuration from :meth:`to_dict` output, checking every value.

    Args:
        values: Parameter names to values; missing names take the defaults.

    Returns:
        The configuration.

    Raises:
        ConfigError: A name is unknown or a value is invalid.
    """
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]!r}; expected one of {list(PARAMETERS)}")
    for name, value in values.items():
        _check_value(name, value)
    return cls(**values)


_TYPES = {"int": int, "float": float, "bool": bool, "choice": str}
# One point of the search space, with one field per row of PARAMETERS (in table order), so
# the table stays the only declaration of a parameter.
ModelConfig = make_dataclass(
    "ModelConfig",
    [(p.name, _TYPES[p.kind], field(default=p.default)) for p in PARAMETERS.values()],
    frozen=True,
    namespace={
        "to_dict": _config_to_dict,
        "from_dict": classmethod(_config_from_dict),
        "__module__": __name__,
    },
)
ModelConfig.__doc__ = (
    "One point of the search space: everything needed to build and train one model.\n\n"
    "Attributes:\n"
    + "".join(f"    {p.name}: {p.help[0].upper()}{p.help[1:]}.\n" for p in PARAMETERS.values())
)


def _check_value(name: str, value: Any) -> None:
    """Raises ConfigError unless ``value`` is valid for parameter ``name``."""
    spec = PARAMETERS.get(name)
    if spec is None:
        raise ConfigError(f"unknown parameter {shorten(name)}; expected one of {list(PARAMETERS)}")
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a positive integer, got {name}={shorten(value)}")
        if value == 0 and not spec.allow_zero:
            raise ConfigError(f"{name} must be a positive integer, got {name}={shorten(value)}")
    elif spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a positive number, got {name}={shorten(value)}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not spec.allow_zero):
            expected = "a number from 0" if spec.allow_zero else "a positive number"
            raise ConfigError(f"{name} must be {expected}, got {name}={shorten(value)}")
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {name}={shorten(value)}")
    elif value not in spec.allowed:  # type: ignore[operator]
        raise ConfigError(
            f"unknown {name} {shorten(value)}; expected one of {', '.join(map(str, spec.allowed))}"
        )
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{name} must be at most {spec.maximum:g}, got {name}={shorten(value)}")


@dataclass(frozen=True)
class Choice:
    """A parameter tried over a list of values (grid-able)."""

    values: tuple

    def to_dict(self) -> list:
        """The choices as a JSON list."""
        return list(self.values)


@dataclass(frozen=True)
class Range:
    """A numeric parameter sampled between ``low`` and ``high`` (inclusive)."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The range as a JSON object."""
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out


Parameter = Choice | Range


def _parse_parameter(name: str, spec: Any) -> Parameter:
    """Turns one JSON value (list, scalar or range object) into a checked parameter."""
    if name not in PARAMETERS:
        raise ConfigError(f"unknown parameter {shorten(name)}; expected one of {list(PARAMETERS)}")
    kind = PARAMETERS[name].kind
    if isinstance(spec, dict):
        if kind not in ("int", "float"):
            raise ConfigError(f"{name} takes a list of choices, not a range, got {shorten(spec)}")
        extra = set(spec) - {"low", "high", "log", "step"}
        if extra or not {"low", "high"} <= set(spec):
            raise ConfigError(
                f"{name}: a range needs 'low' and 'high' (optional 'log', 'step'), got "
                f"{shorten(spec)}"
            )
        low, high, log, step = (
            spec["low"],
            spec["high"],
            bool(spec.get("log", False)),
            spec.get("step"),
        )
        if kind == "int":
            for v in (low, high):
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                _check_value(name, v)
            low, high = int(low), int(high)
        else:
            _check_value(name, low)
            _check_value(name, high)
        if low > high:
            raise ConfigError(
                f"{name}: range low must not exceed high, got low={low}, high={high}"
            )
        if step is not None and (
            isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
        ):
            raise ConfigError(f"{name}: step must be a positive number, got step={step!r}")
        if log and step is not None:
            raise ConfigError(f"{name}: a range cannot be both log-scaled and stepped")
        if step is not None and kind == "int" and not float(step).is_integer():
            raise ConfigError(f"{name}: an integer range needs a whole step, got step={step!r}")
        count = (high - low) / step + 1 if step is not None else 1
        if count > limits.get("max_range_values"):
            raise ConfigError(
                f"{name}: the range {low}..{high} in steps of {step!r} holds about "
                f"{count:.3g} values, more than the {limits.get('max_range_values'):,} allowed "
                "(AUTOML_MAX_RANGE_VALUES); use a larger step or no step"
            )
        return Range(low, high, log, step)
    values = spec if isinstance(spec, (list, tuple)) else [spec]
    if len(values) == 0:
        raise ConfigError(f"{name}: the list of choices is empty; give at least one value")
    checked = []
    for value in values:
        if kind == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        _check_value(name, value)
        if value not in checked:
            checked.append(value)
    return Choice(tuple(checked))


@dataclass(frozen=True)
class SearchSpace:
    """What the search may try: one :class:`Choice` or :class:`Range` per parameter.

    Attributes:
        parameters: Every parameter of :class:`ModelConfig`, by name.
    """

    parameters: dict[str, Parameter]

    @classmethod
    def from_dict(cls, spec: dict[str, Any], fill_defaults: bool = True) -> SearchSpace:
        """Reads a space from plain values: a list (choices), a scalar, or a range object.

        Args:
            spec: Parameter names to ``[choices]``, a single value, or
                ``{"low": ..., "high": ..., "log": bool, "step": ...}``.
            fill_defaults: Give parameters missing from ``spec`` the single default value
                of :class:`ModelConfig`. Defaults to True.

        Returns:
            The validated space.

        Raises:
            ConfigError: An unknown parameter, an empty list or an invalid value.
        """
        if not isinstance(spec, dict):
            raise ConfigError(f"a search space must be a mapping of parameter names, got {spec!r}")
        parameters = {name: _parse_parameter(name, value) for name, value in spec.items()}
        if fill_defaults:
            defaults = ModelConfig()
            for name in PARAMETERS:
                parameters.setdefault(name, Choice((getattr(defaults, name),)))
        ordered = {name: parameters[name] for name in PARAMETERS if name in parameters}
        return cls(ordered)

    def to_dict(self) -> dict[str, Any]:
        """The space as JSON-ready values (round-trips through :meth:`from_dict`)."""
        return {name: p.to_dict() for name, p in self.parameters.items()}

    def varying(self) -> list[str]:
        """The parameters with more than one value to try (two or more choices, or a range
        whose ends differ), in table order."""
        return [
            name
            for name, p in self.parameters.items()
            if (len(p.values) > 1 if isinstance(p, Choice) else p.low != p.high)
        ]

    def grid_size(self) -> int | None:
        """Number of configurations of the full grid, or None if a parameter is a range."""
        if any(isinstance(p, Range) for p in self.parameters.values()):
            return None
        return math.prod(len(p.values) for p in self.parameters.values())  # type: ignore[union-attr]

    def grid(self) -> dict[str, list]:
        """Choices per parameter, as Optuna's ``GridSampler`` takes them.

        Raises:
            ConfigError: A parameter is a range, which a grid cannot enumerate.
        """
        for name, p in self.parameters.items():
            if isinstance(p, Range):
                raise ConfigError(
                    f"grid search needs a list of choices for every parameter, but {name} is a "
                    f"range {p.low}..{p.high}; give a list or pick another strategy"
                )
        size = self.grid_size()
        if size is not None and size > limits.get("max_grid_size"):
            raise ConfigError(
                f"the grid holds {size:,} configurations, more than the "
                f"{limits.get('max_grid_size'):,} allowed (AUTOML_MAX_GRID_SIZE); give fewer "
                "choices or use a sampling strategy (random, tpe-cost) with ranges"
            )
        return {name: list(p.values) for name, p in self.parameters.items()}  # type: ignore[union-attr]

    def configurations(self) -> list[ModelConfig]:
        """Every configuration of the grid, in a stable order."""
        grid = self.grid()
        names = list(grid)
        return [
            ModelConfig(**dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*grid.values())
        ]

    def validate_for(self, input_shape: tuple[int, ...]) -> None:
        """Checks that every configuration fits images of ``input_shape`` (H, W, C).

        Each convolution block halves the image, so ``2 ** num_conv_layers`` may not exceed
        the shorter side, and the kernel may not be larger than the image.

        Raises:
            ConfigError: A value would shrink the image below 1x1.
        """
        side = min(input_shape[0], input_shape[1])
        depth = self.parameters["num_conv_layers"]
        deepest = depth.high if isinstance(depth, Range) else max(depth.values)
        if 2**deepest > side:
            limit = int(math.log2(side))
            raise ConfigError(
                f"num_conv_layers={deepest} would shrink the {input_shape[0]}x{input_shape[1]} image "
                f"below 1x1; at most {limit} layers fit this image size"
            )
        kernel = self.parameters["kernel_size"]
        widest = kernel.high if isinstance(kernel, Range) else max(kernel.values)
        if widest > side:
            raise ConfigError(
                f"kernel_size={widest} is larger than the {input_shape[0]}x{input_shape[1]} image"
            )

    def distributions(self) -> dict[str, Any]:
        """Every parameter as an Optuna distribution, in the order trials suggest them."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        result: dict[str, Any] = {}
        for name, p in self.parameters.items():
            if isinstance(p, Choice):
                result[name] = CategoricalDistribution(list(p.values))
            elif PARAMETERS[name].kind == "int":
                step = int(p.step) if p.step else 1
                result[name] = IntDistribution(int(p.low), int(p.high), step=step, log=p.log)
            else:
                result[name] = FloatDistribution(p.low, p.high, step=p.step, log=p.log)
        return result

    def suggest(self, trial) -> ModelConfig:
        """Asks an Optuna trial for one value of every parameter.

        Args:
            trial: An ``optuna.Trial``.

        Returns:
            The configuration the trial's sampler chose.
        """
        from optuna.distributions import CategoricalDistribution, IntDistribution

        values: dict[str, Any] = {}
        for name, d in self.distributions().items():
            if isinstance(d, CategoricalDistribution):
                values[name] = trial.suggest_categorical(name, list(d.choices))
            elif isinstance(d, IntDistribution):
                values[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
            else:
                values[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        return ModelConfig(**values)


def value_text(value: Any) -> str:
    """How a parameter's value reads for people: text as is, on / off, numbers short."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value if isinstance(value, str) else f"{value:g}"


@dataclass(frozen=True)
class VaryingParameter:
    """One parameter a space searches over, as a summary shows it.

    Attributes:
        name: The parameter's name.
        label: Its display name (:attr:`ParameterSpec.label`).
        values: Its choices (``16, 32, 64``) or its range (``0.0001 – 0.01, log``).
        count: How many choices, or None for a range.
    """

    name: str
    label: str
    values: str
    count: int | None


def varying_parameters(space: SearchSpace) -> list[VaryingParameter]:
    """The parameters of ``space`` with more than one value (a range counts), in table order.

    The others hold one value each and do not change from trial to trial.
    """
    rows = []
    for name, parameter in space.parameters.items():
        label = PARAMETERS[name].label
        if isinstance(parameter, Range):
            text = f"{value_text(parameter.low)} – {value_text(parameter.high)}"
            if parameter.log:
                text += ", log scale"
            if parameter.step is not None:
                text += f", step {value_text(parameter.step)}"
            rows.append(VaryingParameter(name, label, text, None))
        elif len(parameter.values) > 1:
            text = ", ".join(value_text(v) for v in parameter.values)
            rows.append(VaryingParameter(name, label, text, len(parameter.values)))
    return rows


def load_space(path: str | Path) -> SearchSpace:
    """Reads a search space from a JSON or YAML file.

    Args:
        path: A ``.json``, ``.yaml`` or ``.yml`` file holding one mapping.

    Returns:
        The validated space (missing parameters take their defaults).

    Raises:
        ConfigError: The file is missing or malformed, or the space is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file '{path}' does not exist")
    limit = limits.get("max_space_file_bytes")
    if path.stat().st_size > limit:
        raise ConfigError(
            f"search space file '{path}' is {path.stat().st_size:,} bytes, more than the "
            f"{limit:,} allowed (AUTOML_MAX_SPACE_FILE_BYTES)"
        )
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            spec = _load_yaml_without_aliases(text)
        else:
            spec = json.loads(text)
    except ConfigError as exc:
        raise ConfigError(f"search space file '{path}': {exc}") from None
    except Exception as exc:
        reason = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:200]
        raise ConfigError(
            f"search space file '{path}' is not valid JSON/YAML ({reason})"
        ) from None
    return SearchSpace.from_dict(spec)


def _load_yaml_without_aliases(text: str) -> Any:
    """Parses YAML with anchors and aliases refused: a few hundred bytes of nested aliases
    expand to gigabytes (a "billion laughs"), and a search space never needs them."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"YAML aliases (*name) are not allowed, found one at line {mark.line + 1}"
                )
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506  (a SafeLoader subclass)


def shorten(value: Any, length: int = 80) -> str:
    """A value's repr cut to ``length`` characters, for messages."""
    text = repr(value)
    return text if len(text) <= length else f"{text[: length - 1]}…"


def parse_parameter_text(name: str, text: str) -> Any:
    """Parses a command-line value: ``16,32`` (choices) or ``1e-4:1e-2[:log]`` (a range).

    Args:
        name: The parameter's name (decides int, float or text).
        text: The flag's text.

    Returns:
        A value :meth:`SearchSpace.from_dict` takes.

    Raises:
        ConfigError: The text cannot be read as the parameter's kind.
    """
    if name not in PARAMETERS:
        raise ConfigError(f"unknown parameter {name!r}; expected one of {list(PARAMETERS)}")
    kind = PARAMETERS[name].kind

    def number(token: str):
        try:
            value = float(token)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {token!r}") from None
        return int(value) if kind == "int" and value.is_integer() else value

    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        log = len(parts) == 3 and parts[2] == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise ConfigError(f"{name}: a range is LOW:HIGH or LOW:HIGH:log, got {text!r}")
        return {"low": number(parts[0]), "high": number(parts[1]), "log": log}
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    if not tokens:
        raise ConfigError(f"{name}: the list of choices is empty; give at least one value")
    if kind == "bool":
        return [_boolean(name, t) for t in tokens]
    return [number(t) if kind in ("int", "float") else t for t in tokens]


def _boolean(name: str, token: str) -> bool:
    """``true`` / ``false`` (or yes / no, 1 / 0) from command-line text."""
    lowered = token.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {token!r}")
