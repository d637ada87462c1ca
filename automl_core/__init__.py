"""AutoML for convolutional autoencoders: datasets, search spaces, search, storage, inspection.

This package has no Streamlit import; the dashboard in ``app.py`` and ``pages/`` and the
command line (``python -m automl_core``, or ``automl`` once installed) both call it.

Its Python API (:mod:`automl_core.api`)::

    import automl_core

    study = automl_core.search(dataset="digits", trials=2, max_epochs=1)
    table = automl_core.results(study)       # the leaderboard, a pandas.DataFrame
    model = automl_core.load_model(study)    # the best trial's keras.Model
    automl_core.export(study, "exports")     # its bundle and the study's HTML report

The four names load on first use, so ``import automl_core.space`` (say) stays light: no
TensorFlow, Optuna or pandas until they are needed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

__version__ = "0.1.0"
__all__ = ["search", "results", "load_model", "export"]


def __getattr__(name: str):
    """The API's functions, imported on first use (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # a module of the package has that name too: it is the attribute, made callable
        return importlib.import_module(f"{__name__}.{name}")
    from automl_core import api  # lazily: api imports Optuna, pandas and the search loop

    return getattr(api, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _CallableModule(types.ModuleType):
    """A module of the package named like a function of the API (``automl_core.search``,
    ``results``, ``export``): calling it calls that function, and its own names
    (``automl_core.search.run_search``) stay what they are.

    Python binds a submodule to its package's attribute of the same name once the submodule
    is imported (as the search loop imports ``automl_core.results``), so the attribute
    cannot be the plain function; a callable module is both.
    """

    def __call__(self, *args, **kwargs):
        from automl_core import api  # lazily, as in __getattr__

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _CallableModuleLoader:
    """Loads a module as the file's own loader does, into a :class:`_CallableModule`."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # everything else (source, resources) as the real loader
        return getattr(self._loader, name)

    def create_module(self, spec):
        return _CallableModule(spec.name)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)


class _CallableSubmodules:
    """An import hook that loads the package's modules named in ``__all__`` callable."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in __all__:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _CallableModuleLoader(spec.loader)
        return spec


if not any(type(f).__module__ == __name__ for f in sys.meta_path):  # once, also on a reload
    sys.meta_path.insert(0, _CallableSubmodules())
