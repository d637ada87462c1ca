"""Latent projections (a contract over the registry), the linear probe, interpolation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from automl_core.analysis import charts, latent
from automl_core.analysis.latent import (
    PROJECTIONS,
    interpolate,
    latent_projection,
    projection_params,
)
from automl_core.errors import ConfigError
from automl_core.model.representation import linear_probe


@pytest.fixture(scope="module")
def latents():
    """60 latent vectors of size 6 in three clusters, with labels."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    centres = rng.normal(0, 5, (3, 6))
    return (centres[labels] + rng.normal(0, 0.5, (60, 6))).astype(np.float32), labels


@pytest.mark.parametrize("method", sorted(PROJECTIONS))
class TestProjectionContract:
    def test_one_2d_point_per_vector(self, method, latents):
        z, _ = latents
        projection = latent_projection(z, method, seed=0)
        assert projection.points.shape == (len(z), 2)
        assert np.isfinite(projection.points).all()
        assert projection.method == method
        assert set(projection.params) == {p.name for p in PROJECTIONS[method].parameters}

    def test_defaults_are_in_range(self, method):
        for p in PROJECTIONS[method].parameters:
            assert p.low <= p.default <= p.high
        assert projection_params(method) == {
            p.name: p.default for p in PROJECTIONS[method].parameters
        }

    def test_unknown_parameter(self, method, latents):
        with pytest.raises(ConfigError, match="has no parameter 'bogus'"):
            latent_projection(latents[0], method, {"bogus": 1})

    def test_figure_coloured_and_uncoloured(self, method, latents):
        z, labels = latents
        projection = latent_projection(z, method)
        fig = charts.projection_figure(projection, labels, ("a", "b", "c"), selected=[3])
        assert [t.name for t in fig.data] == ["a", "b", "c", "selected"]
        assert sum(len(t.x) for t in fig.data[:3]) == len(z)
        assert fig.data[0].type == "scattergl"
        # customdata carries the image index back from a selection
        assert int(fig.data[1].customdata[0][0]) == int(np.flatnonzero(labels == 1)[0])
        assert len(charts.projection_figure(projection).data) == 1


def test_unknown_method():
    with pytest.raises(ConfigError, match="unknown projection 'lda'; expected one of pca, tsne"):
        latent_projection(np.zeros((5, 2)), "lda")


def test_perplexity_larger_than_points_is_clamped_with_notice(latents):
    z = latents[0][:12]
    projection = latent_projection(z, "tsne", {"perplexity": 50.0})
    assert projection.points.shape == (12, 2)
    assert projection.params["perplexity"] < 12 / 3
    assert "perplexity=50 must be below a third of the 12 points" in projection.notices[0]


def test_n_neighbors_larger_than_points_is_clamped(latents):
    projection = latent_projection(latents[0][:10], "umap", {"n_neighbors": 50})
    assert projection.params["n_neighbors"] == 9
    assert "n_neighbors=50" in projection.notices[0]


def test_out_of_range_parameter():
    with pytest.raises(
        ConfigError, match=r"perplexity must be a number in \[2, 100\], got perplexity=0"
    ):
        latent_projection(np.zeros((20, 3)), "tsne", {"perplexity": 0})


def test_too_few_points():
    with pytest.raises(ConfigError, match="at least 4 points, got 3"):
        latent_projection(np.zeros((3, 3)), "tsne")


def test_one_dimensional_latents_pca():
    projection = latent_projection(np.arange(6, dtype=np.float32)[:, None], "pca")
    assert projection.points.shape == (6, 2) and projection.notices


def test_linear_probe_separates_clusters(latents):
    z, labels = latents
    result = linear_probe(z[::2], labels[::2], z[1::2], labels[1::2])
    assert result.accuracy == pytest.approx(1.0)
    assert result.chance == pytest.approx(1 / 3, abs=0.05)
    assert (result.train_size, result.test_size) == (30, 30)


def test_linear_probe_needs_labels(latents):
    z, labels = latents
    with pytest.raises(ConfigError, match="no labels"):
        linear_probe(z, None, z, None)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        linear_probe(z, np.zeros(60, int), z, labels)


def test_interpolate_ends_and_steps():
    path = interpolate(np.zeros(3), np.ones(3), steps=5)
    assert path.shape == (5, 3)
    np.testing.assert_allclose(path[0], 0)
    np.testing.assert_allclose(path[-1], 1)
    np.testing.assert_allclose(path[2], 0.5)
    with pytest.raises(ConfigError, match="steps=1"):
        interpolate(np.zeros(3), np.ones(3), steps=1)
    with pytest.raises(ConfigError, match="same shape"):
        interpolate(np.zeros(3), np.ones(4))


def test_slider_ranges_widen_the_observed_range_and_span_constant_units():
    codes = np.array([[0.0, 5.0], [1.0, 5.0]])
    low, high = latent.slider_ranges(codes, margin=0.5)
    assert low[0] == pytest.approx(-0.501) and high[0] == pytest.approx(1.501)
    assert high[1] - low[1] == pytest.approx(0.002)


def test_projection_table_has_one_row_per_point():
    projection = latent.latent_projection(np.random.default_rng(0).random((6, 3)), "pca", seed=0)
    table = latent.projection_table(projection, np.arange(6))
    assert list(table.columns) == ["index", "x", "y", "label"] and len(table) == 6
    assert table["label"].tolist() == list(range(6))


def test_umap_is_imported_without_tensorflow():
    """``import_umap`` skips umap's TensorFlow-based ParametricUMAP (~10 s of import)."""
    import subprocess
    import sys

    code = (
        "import sys; from automl_core.analysis.latent import import_umap; umap = import_umap(); "
        "print(hasattr(umap, 'UMAP'), 'tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert out == ["True", "False"]


UMAP_CACHE_HITS = """
import sys
from automl_core.analysis.latent import warm_up_umap
warm_up_umap()
from numba.core.registry import CPUDispatcher
for name, module in list(sys.modules.items()):
    if name.startswith("umap") and module is not None:
        for attr, kernel in vars(module).items():
            if isinstance(kernel, CPUDispatcher) and sum(kernel.stats.cache_hits.values()):
                print(f"{name}.{attr}")
"""


def test_umap_kernels_are_cached_on_disk_for_the_next_process():
    """A warm-up leaves compiled kernels on disk that a later process loads instead of
    compiling: the first UMAP of a new server does not compile them again.

    The session's one numba cache (numba's default folder, or ``NUMBA_CACHE_DIR``) is used,
    so the kernels are compiled at most once per test session, by whichever UMAP runs first.
    """
    import subprocess
    import sys

    def warm_up() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", UMAP_CACHE_HITS],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    warm_up()  # compiles and caches what no earlier process of the session did
    loaded = warm_up()
    # layout optimisation and the fuzzy graph are umap kernels without cache=True of their own
    assert any(".layouts." in name for name in loaded), loaded
    assert any(name.startswith("umap.umap_.") for name in loaded), loaded


def test_umap_uses_exact_neighbours_from_scikit_learn(monkeypatch):
    """UMAP gets its neighbour graph from scikit-learn for every size, so pynndescent's kernels
    are never compiled, and the map still separates two far-apart clusters."""
    from automl_core.analysis import latent

    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 1, (60, 4)), rng.normal(30, 1, (60, 4))])
    umap = latent.import_umap()
    seen = {}
    real = umap.UMAP

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(umap, "UMAP", spy)
    mapped, used, _ = latent._umap(points.astype(np.float32), 0, n_neighbors=10)
    indices, distances, _ = seen["precomputed_knn"]
    assert indices.shape == (120, 10) and (indices[:, 0] == np.arange(120)).all()
    assert seen["force_approximation_algorithm"] and seen["n_epochs"] == latent.UMAP_EPOCHS
    gaps = np.linalg.norm(mapped[:, None] - mapped[None], axis=-1) + np.eye(120) * 1e9
    nearest = gaps.argmin(axis=1)
    assert ((nearest < 60) == (np.arange(120) < 60)).all()  # no point's neighbour crosses over


def test_dashboard_starts_one_warm_up_process_unless_turned_off(monkeypatch):
    import threading

    from automl_core.analysis import latent
    from dashboard import state

    class Child:  # stands in for the Popen of the real warm-up
        def __init__(self):
            self.reaped = threading.Event()

        def wait(self):
            self.reaped.set()

    started = []

    def start():
        started.append(Child())
        return started[-1]

    monkeypatch.setattr(latent, "start_umap_warm_up", start)
    monkeypatch.setenv(state.WARM_UP_ENV, "0")
    state.start_warm_up.clear()
    assert state.start_warm_up() is None and not started
    monkeypatch.setenv(state.WARM_UP_ENV, "1")
    state.start_warm_up.clear()
    child = state.start_warm_up()
    assert child is started[0]
    assert state.start_warm_up() is child and len(started) == 1  # once per process
    assert child.reaped.wait(10)  # waited for, so a finished child is no zombie
    state.start_warm_up.clear()


def test_warm_up_child_process_runs_at_low_priority():
    """The child lowers its own priority first thing (no preexec_fn in a threaded server)."""
    import time

    from automl_core.analysis import latent

    child = latent.start_umap_warm_up()
    niceness = 0
    try:
        deadline = time.monotonic() + 60
        while niceness < 10 and time.monotonic() < deadline and child.poll() is None:
            with open(f"/proc/{child.pid}/stat") as stat:  # Linux: field 19 is the niceness
                niceness = int(stat.read().rsplit(")", 1)[1].split()[16])
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert niceness >= 10
