"""The dashboard's entry point: ``streamlit run app.py``. A router over the pages.

Streamlit runs this file as the page script of every session (as ``__main__``). ``streamlit
run`` also imports it once, as the module ``app``, and finds ``app``: an ``st.App`` that
serves this same file and, through its lifespan (:func:`dashboard.lifespan.warm_start`), runs
the landing page once as soon as the server is up, so the first visitor finds it warm.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.lifespan import warm_start

ROOT = Path(__file__).resolve().parent
SECTIONS = {
    "Search": [
        ("pages/overview.py", "Overview", ":material/home:"),
        ("pages/search.py", "Search", ":material/rocket_launch:"),
        ("pages/leaderboard.py", "Leaderboard", ":material/leaderboard:"),
        ("pages/export.py", "Export", ":material/download:"),
    ],
    "Inspect": [
        ("pages/filters.py", "Filters", ":material/grid_on:"),
        ("pages/activations.py", "Activations", ":material/layers:"),
        ("pages/latent_space.py", "Latent space", ":material/scatter_plot:"),
        ("pages/reconstructions.py", "Reconstructions", ":material/compare:"),
    ],
}


def route() -> None:
    """Draws the shell (logo, navigation, login) and runs the page the visitor asked for."""
    # imported here, not above: `streamlit run` imports this file before the runtime exists
    from dashboard.auth import login_ui
    from dashboard.state import follow_deep_link, mark_routed, shown_errors, start_warm_up

    st.set_page_config(page_title="Autoencoder AutoML", page_icon=":material/hub:", layout="wide")
    st.logo(str(ROOT / "assets" / "logo.svg"))
    st.html(f"<style>{(ROOT / 'assets' / 'style.css').read_text(encoding='utf-8')}</style>")
    mark_routed()
    # one st.Page per file, by file name (a deep link names the file it asked for)
    by_file = {
        Path(path).name: st.Page(path, title=title, icon=icon)
        for entries in SECTIONS.values()
        for path, title, icon in entries
        if (ROOT / path).exists()
    }
    sections = {
        section: [by_file[Path(path).name] for path, _, _ in entries if Path(path).name in by_file]
        for section, entries in SECTIONS.items()
    }
    navigation = st.navigation({section: pages for section, pages in sections.items() if pages})
    follow_deep_link(by_file)
    with shown_errors():  # each page catches its own; this is the last edge
        login_ui()  # shared mode: who acts (the core checks every action's role itself)
        navigation.run()
    start_warm_up()  # after the page is drawn: compile UMAP before a visitor asks for it


if __name__ == "__main__":
    route()
elif hasattr(st, "App"):  # a Streamlit with st.App (1.67 here): `streamlit run` serves it
    app = st.App(__file__, lifespan=warm_start)
