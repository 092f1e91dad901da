"""File Meta Information for a received dataset: see ``gateway.part10`` (a file format, shared with ingest)."""

from __future__ import annotations

from gateway.part10 import file_meta

__all__ = ["file_meta"]
