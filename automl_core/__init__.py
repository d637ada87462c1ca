"""AutoML for convolutional autoencoders: datasets, search spaces, search, storage, inspection.

This package has no Streamlit import; the dashboard in ``app.py`` and ``pages/`` and the
command line (``python -m automl_core``) both call it.
"""

from __future__ import annotations

__version__ = "0.1.0"
