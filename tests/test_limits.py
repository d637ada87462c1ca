"""Named limits: read from the environment, checked, and every one documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from automl_core import limits
from automl_core.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_default_applies_without_the_environment(monkeypatch):
    monkeypatch.delenv("AUTOML_MAX_UPLOAD_BYTES", raising=False)
    assert limits.get("max_upload_bytes") == 50 * limits.MIB


def test_environment_overrides_the_default(monkeypatch):
    monkeypatch.setenv("AUTOML_MAX_UPLOAD_BYTES", "1024")
    assert limits.get("max_upload_bytes") == 1024


@pytest.mark.parametrize("raw", ["0", "-5", "lots", "1.5"])
def test_a_bad_environment_value_is_named(monkeypatch, raw):
    monkeypatch.setenv("AUTOML_MAX_UPLOAD_BYTES", raw)
    with pytest.raises(ConfigError, match="AUTOML_MAX_UPLOAD_BYTES must be a positive integer"):
        limits.get("max_upload_bytes")


def test_unknown_limit_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown limit 'nope'; expected one of max_upload"):
        limits.get("nope")


@pytest.mark.parametrize("name", sorted(limits.LIMITS))
def test_every_limit_is_in_the_readme_table(name):
    text = README.read_text(encoding="utf-8")
    assert f"| `{name}` | `{limits.LIMITS[name].env}` |" in text


def test_streamlit_upload_limit_matches_the_core():
    config = (README.parent / ".streamlit" / "config.toml").read_text(encoding="utf-8")
    assert f"maxUploadSize = {limits.LIMITS['max_upload_bytes'].default // limits.MIB}" in config
