"""Streamlit's own floor for ``bench/cold_server.py``: the landing page's visible elements
(the title, the "Best trial: #" heading, two strips of ten small images) with nothing of the
workbench behind them: no study, no Optuna, no pandas. Served by ``cold_server.py --bare``."""

import numpy as np
import streamlit as st

st.set_page_config(page_title="Autoencoder AutoML", layout="wide")
st.title("Autoencoder AutoML")
st.subheader("Best trial: #0")
strip = np.random.default_rng(0).integers(0, 255, (10, 28, 28), dtype=np.uint8)
st.image(list(strip), width=64)
st.image(list(255 - strip), width=64)
