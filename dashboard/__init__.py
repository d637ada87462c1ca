"""Streamlit glue shared by the pages: storage, study and trial pickers, caches.

Everything here reads widgets or caches results of ``automl_core``; no computation lives here.
"""
