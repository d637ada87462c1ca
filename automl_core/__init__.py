"""AutoML for convolutional autoencoders: datasets, search spaces, search, storage, inspection.

This package has no Streamlit import; the dashboard in ``app.py`` and ``pages/`` and the
command line (``python -m automl_core``, or ``automl`` once installed) both call it.

Its Python API (:mod:`automl_core.api`)::

    import automl_core

    study = automl_core.search(dataset="digits", trials=2, max_epochs=1)
    table = automl_core.results(study)       # the leaderboard, a pandas.DataFrame
    model = automl_core.load_model(study)    # the best trial's keras.Model
    automl_core.export(study, "exports")     # its bundle and the study's HTML report

The four names load on first use, so ``import automl_core.model.space`` (say) stays light:
no TensorFlow, Optuna or pandas until they are needed.
"""

from __future__ import annotations

# The search layer is a folder named like the API's search(). Python binds a subpackage to
# its parent's attribute when the subpackage is first imported, so it is imported here, once,
# and the binding dropped: from then on ``automl_core.search`` is the function (through
# __getattr__) while ``from automl_core.search import runner`` still finds the folder.
from automl_core import search as _search_layer  # noqa: F401

del search  # noqa: F821 - the binding the import above made

__version__ = "0.1.0"
__all__ = ["search", "results", "load_model", "export"]


def __getattr__(name: str):
    """The API's functions, imported on first use (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from automl_core import api  # on first use: api imports Optuna, pandas and the search loop

    return getattr(api, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
