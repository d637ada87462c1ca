"""The Leaderboard shows what a learning strategy learned: controller probabilities, DARTS
architecture weights and the derived architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from automl_core.storage.settings import SearchSettings

ROOT = Path(__file__).resolve().parent.parent
SPACE = {
    "num_conv_layers": [1],
    "filters": [4, 8],
    "latent_dim": [4, 8],
    "kernel_size": [3, 5],
    "batch_size": [32],
}


@pytest.fixture(scope="module")
def strategies_home(tmp_path_factory, search_in):
    home = tmp_path_factory.mktemp("strategy_runs")
    for strategy in ("reinforce", "darts", "random"):
        search_in(
            home,
            SearchSettings(
                study=f"s-{strategy}",
                dataset="digits",
                space=SPACE,
                strategy=strategy,
                trials=2,
                max_epochs=1,
                max_images=120,
            ),
        )
    return home


def _leaderboard(home, monkeypatch, tmp_path, study: str) -> AppTest:
    from dashboard import state

    monkeypatch.setenv("AUTOML_HOME", str(home))
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    monkeypatch.setattr(state, "DEMO_DIR", tmp_path / "no-demo")
    at = AppTest.from_file(str(ROOT / "pages" / "leaderboard.py"), default_timeout=120)
    at.session_state["study"] = study
    return at.run()


def _markdown(at: AppTest) -> str:
    return " | ".join(m.value for m in at.markdown)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "titles"),
    [
        ("reinforce", ["Controller choice probabilities"]),
        ("darts", ["Architecture weights per cell", "Derived architecture"]),
        ("random", []),
    ],
)
def test_leaderboard_shows_what_the_strategy_learned(
    strategy, titles, strategies_home, monkeypatch, tmp_path
):
    at = _leaderboard(strategies_home, monkeypatch, tmp_path, f"s-{strategy}")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    text = _markdown(at)
    for title in titles:
        assert title in text
    if not titles:
        assert "What the strategy learned" not in " | ".join(s.value for s in at.subheader)
