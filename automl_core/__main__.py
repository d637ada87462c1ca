"""Entry point of ``python -m automl_core``."""

from automl_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
