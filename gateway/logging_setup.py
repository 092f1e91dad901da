"""Log format and levels of the gateway process."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Never log request lines: DICOMweb query strings carry patient identifiers.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # pynetdicom logs whole datasets, identifiers included, at INFO and DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom's validation warnings quote element values, names included.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
