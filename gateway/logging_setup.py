"""Log format and levels of the gateway process."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TextIO


def _withhold_text(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None, line: str | None = None
) -> None:
    """Log a library's warning by its kind and origin only: pydicom's quote the values they judge (names, IDs, UIDs)."""
    origin = "/".join(Path(filename).parts[-2:])
    logging.getLogger("py.warnings").warning("%s at %s:%d (text withheld: it may quote patient data)", category.__name__, origin, lineno)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Never log request lines: DICOMweb query strings carry patient identifiers.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # pynetdicom logs whole datasets, identifiers included, at INFO and DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom's validation warnings quote element values, names included: as log records and as Python warnings.
    # Its import sets its logger's level, so it is imported before the level is set here.
    import pydicom.config  # noqa: F401

    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.showwarning = _withhold_text
