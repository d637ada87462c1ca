"""The dashboard's entry point: ``streamlit run app.py``. A router over the pages."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.state import mark_routed

ROOT = Path(__file__).resolve().parent
SECTIONS = {
    "Search": [
        ("pages/overview.py", "Overview", ":material/home:"),
        ("pages/search.py", "Search", ":material/rocket_launch:"),
        ("pages/leaderboard.py", "Leaderboard", ":material/leaderboard:"),
    ],
    "Inspect": [
        ("pages/filters.py", "Filters", ":material/grid_on:"),
        ("pages/activations.py", "Activations", ":material/layers:"),
        ("pages/latent_space.py", "Latent space", ":material/scatter_plot:"),
        ("pages/reconstructions.py", "Reconstructions", ":material/compare:"),
    ],
}

st.set_page_config(page_title="Autoencoder AutoML", page_icon=":material/hub:", layout="wide")
st.logo(str(ROOT / "assets" / "logo.svg"))
st.html(f"<style>{(ROOT / 'assets' / 'style.css').read_text(encoding='utf-8')}</style>")
mark_routed()
pages = {
    section: [
        st.Page(path, title=title, icon=icon)
        for path, title, icon in entries
        if (ROOT / path).exists()
    ]
    for section, entries in SECTIONS.items()
}
st.navigation({section: entries for section, entries in pages.items() if entries}).run()
