"""`python -m faas` runs the command line."""

from __future__ import annotations

from faas.cli import main

if __name__ == "__main__":
    main()
