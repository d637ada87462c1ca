"""The storage layer: studies and artifacts, trial records, run settings, result tables."""
