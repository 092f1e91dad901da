"""The error every index operation raises when the database cannot complete it."""

from __future__ import annotations


class IndexDatabaseError(Exception):
    """The index database could not complete an operation."""
