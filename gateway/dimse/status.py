"""DIMSE status codes the gateway answers with (PS3.4 Annex B.2.3 and PS3.7 Annex C)."""

from __future__ import annotations

from gateway.statuses import StoreStatus

__all__ = ["StoreStatus"]
