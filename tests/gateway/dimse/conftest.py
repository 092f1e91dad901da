"""Fixtures shared by the acceptor tests that run raw peers against one gateway per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.dimse.raw_peer import wait_settled


@pytest.fixture
def settled(gateway) -> Iterator[None]:
    """Each test starts and leaves the module's gateway with no connection of its own (``pytestmark`` opts in)."""
    wait_settled(gateway)
    yield
    wait_settled(gateway)
