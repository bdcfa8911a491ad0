"""faas: a self-hosted function runtime that runs AWS Lambda handlers unchanged."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
