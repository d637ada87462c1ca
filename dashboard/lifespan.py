"""The server's lifespan: what runs once when ``streamlit run app.py`` has started the server.

Kept apart from the page modules on purpose: ``streamlit run`` imports ``app.py`` before the
runtime exists, and a module with ``st.cache_data`` functions imported then makes Streamlit
warn that it has no runtime to cache in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

LOGGER = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def warm_start(app) -> AsyncIterator[None]:
    """Runs the landing page once before the server takes visitors.

    Running it once (as Streamlit's script health check does) imports pandas, SQLAlchemy and
    Optuna, installs the demo study on a new install and fills the landing page's caches, so
    the first visitor does not wait for them. The server answers (its health check
    included) once that run ends, or after the ``warm_start_seconds`` limit, when the run
    goes on in the background (a malformed limit is logged and its default used). A failure
    is only logged: the visitor's own run shows it as it would have anyway.

    Args:
        app: The ``st.App`` being served (unused: the runtime is a process singleton).
    """
    from streamlit import runtime

    from automl_core import limits
    from automl_core.errors import ConfigError

    async def run_landing_page() -> None:
        try:
            ok, message = await runtime.get_instance().does_script_run_without_error()
        except Exception:
            LOGGER.warning("warm start failed", exc_info=True)
            return
        if not ok:
            LOGGER.warning("warm start: the landing page ended with %s", message)

    task = asyncio.get_running_loop().create_task(run_landing_page())
    try:
        seconds = limits.get("warm_start_seconds")
    except ConfigError as exc:  # a typo in the environment must not stop the server
        seconds = limits.LIMITS["warm_start_seconds"].default
        LOGGER.error("%s; waiting the default %d s", exc, seconds)
    _, pending = await asyncio.wait({task}, timeout=seconds)
    if pending:
        LOGGER.warning("warm start: the landing page took over %d s; serving anyway", seconds)
    try:
        yield
    finally:
        task.cancel()
