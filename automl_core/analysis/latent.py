"""Latent space: one registry of 2-D projections (PCA, t-SNE, UMAP), paths,
and the map's search (:func:`find_points`) and thumbnails (:func:`thumbnails`).

Add a projection with :func:`register_projection`; the dashboard's method list and the
parameter widgets come from :data:`PROJECTIONS`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl_core.errors import ConfigError


@dataclass(frozen=True)
class ProjectionParameter:
    """One tunable parameter of a projection (for the sidebar and for checking values).

    Attributes:
        name: Keyword argument name.
        default: Value used when none is given.
        low: Smallest allowed value.
        high: Largest allowed value.
        help: One line for the widget.
    """

    name: str
    default: float
    low: float
    high: float
    help: str = ""


@dataclass(frozen=True)
class ProjectionMethod:
    """One registry entry: ``project(latents, seed, **params) -> (points, used, notices)``.

    ``used`` holds the parameters actually applied (a value the data cannot support is
    clamped), ``notices`` says why in words.
    """

    project: Callable[..., tuple[np.ndarray, dict[str, Any], list[str]]]
    description: str
    parameters: tuple[ProjectionParameter, ...] = ()


PROJECTIONS: dict[str, ProjectionMethod] = {}


def register_projection(name: str, description: str, parameters=()):
    """Decorator adding a projection function to :data:`PROJECTIONS` under ``name``."""

    def add(function):
        PROJECTIONS[name] = ProjectionMethod(function, description, tuple(parameters))
        return function

    return add


@dataclass(frozen=True)
class Projection:
    """Latent vectors projected to 2-D.

    Attributes:
        method: The registry name.
        params: The parameters actually used (after any clamping).
        points: (N, 2) float32, one row per latent vector.
        notices: Human-readable notes about adjusted parameters.
    """

    method: str
    params: dict[str, Any]
    points: np.ndarray
    notices: list[str] = field(default_factory=list)


def _flat_pad(latents: np.ndarray) -> np.ndarray:
    """2-D projections of 1-D latents: the value and zero."""
    return np.column_stack([latents[:, 0], np.zeros(len(latents))]).astype(np.float32)


@register_projection("pca", "Principal components: linear, fast, deterministic")
def _pca(latents: np.ndarray, seed: int):
    from sklearn.decomposition import PCA

    if latents.shape[1] < 2 or len(latents) < 2:
        return _flat_pad(latents), {}, ["fewer than 2 latent dimensions or points: one axis"]
    return PCA(2, random_state=seed).fit_transform(latents).astype(np.float32), {}, []


@register_projection(
    "tsne",
    "t-SNE: keeps local neighbourhoods (openTSNE, FFT-accelerated)",
    [ProjectionParameter("perplexity", 30.0, 2.0, 100.0, "effective number of neighbours")],
)
def _tsne(latents: np.ndarray, seed: int, perplexity: float = 30.0):
    notices = []
    n = len(latents)
    if n < 4:
        raise ConfigError(f"t-SNE needs at least 4 points, got {n}")
    limit = float(n - 1) / 3.0
    if perplexity >= limit:
        clamped = max(1.0, float(np.floor(limit * 10) / 10))
        notices.append(
            f"perplexity={perplexity:g} must be below a third of the {n} points; "
            f"used perplexity={clamped:g}"
        )
        perplexity = clamped
    return _tsne_points(latents, seed, perplexity), {"perplexity": perplexity}, notices


def _threads(at_most: int = 2) -> int:
    """Threads a projection may use: at most ``at_most``, and no more than the cores this
    process may run on (numba refuses more threads than that)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(at_most, cores))


# openTSNE's optimisation: TSNE_EARLY_ITERATIONS of early exaggeration, then TSNE_ITERATIONS
# more (its defaults are 250 and 500). On 5,000 codes of mnist-5k the map's 10-NN label
# accuracy was the same (0.919 for 250 + 500 and 250 + 250; 0.927 and 0.926 for 250 + 250
# and 125 + 250 in a later run) in well under half the time (bench/RESULTS.md).
TSNE_EARLY_ITERATIONS = 125
TSNE_ITERATIONS = 250


def _tsne_points(latents: np.ndarray, seed: int, perplexity: float) -> np.ndarray:
    """t-SNE with openTSNE when installed (Barnes-Hut below 10,000 points, FFT above; 5,000
    points in seconds), else scikit-learn's Barnes-Hut (about ten times slower)."""
    data = np.ascontiguousarray(latents, dtype=np.float64)
    try:
        from openTSNE import TSNE as OpenTSNE
    except ImportError:
        OpenTSNE = None
    if OpenTSNE is not None and len(data) > 3 * perplexity + 1:
        embedding = OpenTSNE(
            n_components=2,
            perplexity=perplexity,
            initialization="pca",
            early_exaggeration_iter=TSNE_EARLY_ITERATIONS,
            n_iter=TSNE_ITERATIONS,
            random_state=seed,
            n_jobs=_threads(),
            verbose=False,
        ).fit(data)
        return np.asarray(embedding, dtype=np.float32)
    from sklearn.manifold import TSNE

    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=_threads())
    return tsne.fit_transform(data).astype(np.float32)


# UMAP's layout epochs: its own choice for large data (it takes 500 below 10,000 points,
# which on 5,000 codes costs 2.5x the time for a map that reads the same).
UMAP_EPOCHS = 200


@register_projection(
    "umap",
    "UMAP: local and some global structure; fast on thousands of points",
    [
        ProjectionParameter("n_neighbors", 15, 2, 200, "size of the local neighbourhood"),
        ProjectionParameter("min_dist", 0.1, 0.0, 0.99, "how tightly points may pack"),
    ],
)
def _umap(latents: np.ndarray, seed: int, n_neighbors: int = 15, min_dist: float = 0.1):
    import warnings

    from sklearn.neighbors import NearestNeighbors

    umap = import_umap()
    notices = []
    n = len(latents)
    if n < 4:
        raise ConfigError(f"UMAP needs at least 4 points, got {n}")
    n_neighbors = int(n_neighbors)
    if n_neighbors >= n:
        notices.append(
            f"n_neighbors={n_neighbors} must be below the {n} points; used n_neighbors={n - 1}"
        )
        n_neighbors = n - 1
    data = np.ascontiguousarray(latents, dtype=np.float32)
    # Exact neighbours from scikit-learn (a fraction of a second for 5,000 codes) instead of
    # pynndescent's, whose numba kernels take minutes to compile on a slow 2-core machine; the
    # same neighbour path for every size keeps one set of kernels to compile and cache.
    neighbours = NearestNeighbors(n_neighbors=n_neighbors, n_jobs=_threads()).fit(data)
    distances, indices = neighbours.kneighbors(data)
    # A fixed seed makes UMAP single-threaded; speed matters more here than bit-identical runs.
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=float(min_dist),
        n_epochs=UMAP_EPOCHS,
        n_jobs=_threads(),
        init="spectral" if n > n_neighbors + 2 else "random",
        precomputed_knn=(indices, distances.astype(np.float32), None),
        force_approximation_algorithm=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points = reducer.fit_transform(data)
    used = {"n_neighbors": n_neighbors, "min_dist": float(min_dist)}
    return np.asarray(points, dtype=np.float32), used, notices


def import_umap():
    """The ``umap`` module, imported without its TensorFlow-based ``ParametricUMAP``, with its
    numba kernels cached on disk.

    ``umap``'s package imports ``ParametricUMAP`` (and with it TensorFlow, ~10 s) whenever
    TensorFlow is installed; nothing here uses it, so that submodule is marked absent before
    the first import and ``umap`` falls back to its placeholder class. Most of umap's and
    pynndescent's kernels are compiled in every new process (20 s to 2 min); caching them
    makes a later process load them in about a second. Numba picks the folder: next to the
    package when it is writable, else a per-user cache; ``NUMBA_CACHE_DIR`` overrides it.
    """
    if "umap" not in sys.modules:
        sys.modules.setdefault("umap.parametric_umap", None)
        import umap

        _cache_numba_kernels(("umap", "pynndescent"))
    import umap

    return umap


def _cache_numba_kernels(packages: tuple[str, ...]) -> int:
    """Turns on numba's disk cache for the not yet compiled kernels of ``packages``' modules
    (those declared without ``cache=True``); returns how many."""
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    count = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(packages):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()
                count += 1
    return count


# Enough points for the spectral initialisation; the kernels compiled are the same for any size.
WARM_UP_POINTS = 600


def warm_up_umap(seed: int = 0) -> None:
    """Runs UMAP once on random points, so that numba compiles its kernels and caches them on
    disk before a visitor's first UMAP (see :func:`import_umap`).

    A dashboard runs this in a low-priority child process when it starts
    (:func:`start_umap_warm_up`); a container image can run it at build time.
    """
    rng = np.random.default_rng(seed)
    _umap(rng.random((WARM_UP_POINTS, 8), dtype=np.float32), seed)


WARM_UP_CODE = "from automl_core.analysis.latent import warm_up_umap\nwarm_up_umap()\n"


def start_umap_warm_up() -> subprocess.Popen:
    """Starts :func:`warm_up_umap` in a child process at low priority and returns it.

    A child process, not a thread: numba's compiler is Python code that holds the GIL, and a
    thread of the server would slow every page drawn meanwhile. Its output is discarded; a
    failure only means the first UMAP compiles for itself.
    """
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    # the child lowers its own priority: a preexec_fn is unsafe in a threaded server
    code = "import os\nif hasattr(os, 'nice'):\n    os.nice(10)\n" + WARM_UP_CODE
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def projection_params(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A method's parameters with defaults filled in and ranges checked.

    Raises:
        ConfigError: Unknown method, unknown parameter, or a value out of range.
    """
    if method not in PROJECTIONS:
        raise ConfigError(
            f"unknown projection {method!r}; expected one of {', '.join(PROJECTIONS)}"
        )
    spec = {p.name: p for p in PROJECTIONS[method].parameters}
    params = dict(params or {})
    unknown = set(params) - set(spec)
    if unknown:
        raise ConfigError(
            f"projection {method!r} has no parameter {min(unknown)!r}; "
            f"expected {', '.join(spec) or 'none'}"
        )
    out = {}
    for name, p in spec.items():
        value = params.get(name, p.default)
        if not isinstance(value, (int, float)) or not p.low <= value <= p.high:
            raise ConfigError(
                f"{name} must be a number in [{p.low:g}, {p.high:g}], got {name}={value!r}"
            )
        out[name] = type(p.default)(value)
    return out


def latent_projection(
    latents: np.ndarray, method: str = "pca", params: dict[str, Any] | None = None, seed: int = 0
) -> Projection:
    """Projects latent vectors to 2-D with a registered method.

    Args:
        latents: (N, latent_dim).
        method: A key of :data:`PROJECTIONS`. Defaults to ``pca``.
        params: The method's parameters (see its registry entry); missing ones take defaults.
            Values the data cannot support (a perplexity above what N points allow) are
            clamped and the clamp is reported in :attr:`Projection.notices`.
        seed: Random seed. Defaults to 0.

    Returns:
        The projection, one 2-D point per latent vector.

    Raises:
        ConfigError: Unknown method or parameter, or too few points.
    """
    checked = projection_params(method, params)
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 2 or len(latents) == 0:
        raise ConfigError(
            f"latents must be a non-empty (N, latent_dim) array, got {latents.shape}"
        )
    points, used, notices = PROJECTIONS[method].project(latents, seed, **checked)
    return Projection(method, {**checked, **used}, points, list(notices))


def interpolate(z_from: np.ndarray, z_to: np.ndarray, steps: int = 8) -> np.ndarray:
    """Evenly spaced latent vectors from ``z_from`` to ``z_to``, both ends included.

    Raises:
        ConfigError: Fewer than 2 steps or vectors of different sizes.
    """
    if steps < 2:
        raise ConfigError(f"steps must be at least 2, got steps={steps}")
    z_from, z_to = np.asarray(z_from, np.float32), np.asarray(z_to, np.float32)
    if z_from.shape != z_to.shape:
        raise ConfigError(
            f"latents to interpolate must have the same shape, got {z_from.shape} and {z_to.shape}"
        )
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return (1 - t) * z_from[None] + t * z_to[None]


# the bottleneck sliders reach this share of each unit's range beyond its observed values
SLIDER_MARGIN = 0.25


def slider_ranges(
    codes: np.ndarray, margin: float = SLIDER_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit (low, high) for editing a code by hand: the observed range, widened.

    Args:
        codes: (N, latent_dim) codes of a split.
        margin: Share of each unit's range added on both sides. Defaults to 0.25.

    Returns:
        ``(low, high)``, each (latent_dim,); a unit that never varies still gets a span.
    """
    low, high = codes.min(axis=0), codes.max(axis=0)
    pad = (high - low) * margin + 1e-3
    return low - pad, high + pad


def projection_table(projection: Projection, labels: np.ndarray | None = None) -> pd.DataFrame:
    """A projection's 2-D points as a table (``index``, ``x``, ``y``, ``label``) for download."""
    return pd.DataFrame(
        {
            "index": np.arange(len(projection.points)),
            "x": projection.points[:, 0],
            "y": projection.points[:, 1],
            "label": labels if labels is not None else None,
        }
    )


# --- finding points on the map, and the images drawn at them ----------------------------------

# the map's Thumbnails view draws at most this many images (each is a small PNG in the figure)
THUMBNAIL_LIMIT = 300
# class names listed in a "no such class" message
LISTED_CLASSES = 20
# characters of a query repeated in a message
SHOWN_QUERY_CHARS = 60


@dataclass(frozen=True)
class PointMatch:
    """The points of a latent map that a search found.

    Attributes:
        kind: ``image`` (one image number) or ``class`` (every image of the classes found).
        indices: Indices of the matching points, ascending (never empty).
        message: How many matched and what, in words ("15 of 150 images match: class 3").
    """

    kind: str
    indices: np.ndarray
    message: str


def class_name(value: int, class_names: tuple[str, ...] | None = None) -> str:
    """The name of a label value (the number itself when there are no names for it)."""
    value = int(value)
    if class_names is not None and 0 <= value < len(class_names):
        return str(class_names[value])
    return str(value)


def _shown_query(text: str) -> str:
    """A query as quoted in a message, cut to :data:`SHOWN_QUERY_CHARS`."""
    if len(text) > SHOWN_QUERY_CHARS:
        text = text[: SHOWN_QUERY_CHARS - 1] + "…"
    return repr(text)


def _image_match(
    number: str, count: int, labels: np.ndarray | None, class_names, bare: bool
) -> PointMatch:
    """The point of one image number, or why there is none."""
    if not re.fullmatch(r"[+-]?\d+", number.strip()):
        raise ConfigError(
            f"{_shown_query('#' + number)} is not an image number: type a whole number from 0 "
            f"to {count - 1} (e.g. #{min(42, count - 1)}) or a class name"
        )
    index = int(number)
    if not 0 <= index < count:
        raise ConfigError(f"no image #{index}: the map has {count:,} images (0-{count - 1})")
    message = f"1 of {count:,} images matches: #{index}"
    if labels is not None:
        message += f", class {class_name(labels[index], class_names)}"
        names = {class_name(v, class_names) for v in np.unique(labels)}
        if bare and number.strip() in names:
            message += f" (for the class {number.strip()}, search 'class {number.strip()}')"
    return PointMatch("image", np.array([index]), message)


def _class_match(
    text: str, count: int, labels: np.ndarray | None, class_names: tuple[str, ...] | None
) -> PointMatch:
    """The points of the classes a name finds: the exact name (any case), else the names that
    contain it, else the label value it spells."""
    if labels is None:
        raise ConfigError(
            f"no class {_shown_query(text)}: this dataset has no labels; search by image "
            f"number (0-{count - 1})"
        )
    values = [int(v) for v in np.unique(labels)]
    names = {v: class_name(v, class_names) for v in values}
    wanted = text.casefold()
    found = [v for v in values if names[v].casefold() == wanted]
    if not found:
        found = [v for v in values if wanted in names[v].casefold()]
    if not found and re.fullmatch(r"\d+", text) and int(text) in names:
        found = [int(text)]
    if not found:
        listed = ", ".join(names[v] for v in values[:LISTED_CLASSES])
        if len(values) > LISTED_CLASSES:
            listed += f" and {len(values) - LISTED_CLASSES} more"
        known = [str(n) for n in class_names or () if str(n).casefold() == wanted]
        if known:
            raise ConfigError(
                f"class {known[0]} has no images on this map; its classes are {listed}"
            )
        raise ConfigError(f"no class {_shown_query(text)}; classes are {listed}")
    indices = np.flatnonzero(np.isin(labels, found))
    which = ("class " if len(found) == 1 else "classes ") + ", ".join(names[v] for v in found)
    return PointMatch("class", indices, f"{len(indices):,} of {count:,} images match: {which}")


def find_points(
    query: str,
    count: int,
    labels: np.ndarray | None = None,
    class_names: tuple[str, ...] | None = None,
) -> PointMatch | None:
    """The points of a latent map that a search box's text names.

    ``42`` or ``#42`` is an image number; ``class 3`` or any other text is a class: its
    exact name in any case, else every class whose name contains the text, else (``class
    3``) the label value. A bare number is always an image number, also where the classes are
    numbered (the message then says how to search the class).

    Args:
        query: The text typed; blank means no search.
        count: The number of points on the map (image numbers run from 0 to ``count - 1``).
        labels: One integer label per point, or None (the dataset has no labels).
        class_names: Names of the label values. Defaults to the numbers.

    Returns:
        The matching points, or None for a blank query.

    Raises:
        ConfigError: Nothing matches, or the text is no image number (the message says what
            the map holds).
    """
    text = " ".join(str(query).split())
    if not text:
        return None
    if count < 1:
        raise ConfigError("the map has no points to search")
    if text.startswith("#"):
        return _image_match(text[1:], count, labels, class_names, bare=False)
    if re.fullmatch(r"[+-]?\d+", text):
        return _image_match(text, count, labels, class_names, bare=True)
    prefix = re.match(r"class\s*[:=]?\s*(\S.*)$", text, flags=re.IGNORECASE)
    return _class_match(prefix.group(1) if prefix else text, count, labels, class_names)


@dataclass(frozen=True)
class Thumbnails:
    """Images to draw at their points of a latent map.

    Attributes:
        indices: The points (image numbers) that get a thumbnail.
        images: (K, H, W, C) images in [0, 1], ``images[i]`` belonging to ``indices[i]``.
    """

    indices: np.ndarray
    images: np.ndarray


def thumbnail_indices(
    count: int, limit: int = THUMBNAIL_LIMIT, seed: int = 0, first=(), preferred=()
) -> np.ndarray:
    """Which of ``count`` points get a thumbnail: all of them up to ``limit``; else ``first``
    (the picked images), then a fixed random sample of ``preferred`` (a search's matches),
    then one of the rest.

    Args:
        count: Points on the map.
        limit: At most this many. Defaults to :data:`THUMBNAIL_LIMIT`.
        seed: Seed of the samples. Defaults to 0 (the same points on every rerun).
        first: Points always taken (up to ``limit``); those out of range are left out.
        preferred: Points sampled before the rest.

    Returns:
        The chosen point indices, ascending.

    Raises:
        ConfigError: A negative limit.
    """
    if limit < 0:
        raise ConfigError(f"limit must be a non-negative integer, got limit={limit}")
    if count <= limit:
        return np.arange(count)
    rng = np.random.default_rng(seed)
    chosen = np.array(list(dict.fromkeys(int(i) for i in first if 0 <= int(i) < count)), int)
    chosen = chosen[:limit]
    for pool in (np.asarray(preferred, int), np.arange(count)):
        pool = np.setdiff1d(pool[(pool >= 0) & (pool < count)], chosen)
        take = min(limit - len(chosen), len(pool))
        chosen = np.concatenate([chosen, rng.choice(pool, take, replace=False)]).astype(int)
    return np.sort(chosen)


def thumbnails(
    images: np.ndarray, limit: int = THUMBNAIL_LIMIT, seed: int = 0, first=(), preferred=()
) -> Thumbnails:
    """The images of :func:`thumbnail_indices` (the map's points, in order), for the figure."""
    images = np.asarray(images)
    indices = thumbnail_indices(len(images), limit, seed, first, preferred)
    return Thumbnails(indices, images[indices])
