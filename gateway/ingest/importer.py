"""Bulk import of DICOM files and folders through the same validation and filing as the SCP."""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from gateway.dimse.status import StoreStatus
from gateway.ingest.committer import Committer, Outcome
from gateway.ingest.instance import InstanceRejected, ReceivedInstance
from gateway.ingest.rules_stage import Quarantined, RulesStage
from storage.index.database import IndexDatabaseError
from storage.object_store.base import ObjectStoreError

log = logging.getLogger(__name__)

IMPORT_SOURCE = "IMPORT"
_ATTEMPTS = 5


@dataclass
class ImportSummary:
    imported: int = 0
    replaced: int = 0
    duplicates: int = 0
    quarantined: int = 0
    rejected: list[tuple[Path, str]] = field(default_factory=list)

    def reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.rejected)


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def as_part10(data: bytes) -> bytes:
    """A Part 10 file, whole: a dataset without File Meta Information (older archives) gets one, its
    encoding unchanged; File Meta Information without the preamble (some STOW-RS clients) gets the preamble."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return data
    if data[:2] == b"\x02\x00":  # File Meta Information without the preamble: add it
        return bytes(128) + b"DICM" + data
    try:
        ds = dcmread(io.BytesIO(data), force=True)
        implicit, little = ds.original_encoding
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds or implicit is None:
            raise ValueError("not a dataset")
    except Exception:
        raise InstanceRejected(StoreStatus.CANNOT_UNDERSTAND, "not a DICOM file") from None
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )
    ds.file_meta = meta
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def import_paths(
    paths: Iterable[Path],
    committer: Committer,
    *,
    batch_size: int = 64,
    on_progress: Callable[[int], None] | None = None,
    rules: RulesStage,
) -> ImportSummary:
    """Import files as if received from the calling AE title ``IMPORT``, through the rules when given."""
    summary = ImportSummary()
    batch: list[ReceivedInstance] = []

    def file_batch() -> None:
        for attempt in range(_ATTEMPTS):
            try:
                outcomes = committer.commit(batch)
                break
            except (ObjectStoreError, IndexDatabaseError) as exc:
                if attempt == _ATTEMPTS - 1:
                    raise
                log.warning("storing failed (%s); retrying", exc)
                time.sleep(0.5 * 2**attempt)
        for outcome in outcomes:
            if outcome is Outcome.STORED:
                summary.imported += 1
            elif outcome is Outcome.REPLACED:
                summary.replaced += 1
            else:
                summary.duplicates += 1
        if on_progress:
            on_progress(len(batch))
        batch.clear()

    for path in iter_files(paths):
        try:
            received = rules.receive(as_part10(path.read_bytes()), source_ae=IMPORT_SOURCE)
            if isinstance(received, Quarantined):
                summary.quarantined += 1
                if on_progress:
                    on_progress(1)
                continue
            batch.append(received)
        except InstanceRejected as rejected:
            summary.rejected.append((path, rejected.reason))
            if on_progress:
                on_progress(1)
            continue
        except OSError as exc:
            summary.rejected.append((path, f"cannot read file: {exc.strerror}"))
            if on_progress:
                on_progress(1)
            continue
        if len(batch) >= batch_size:
            file_batch()
    if batch:
        file_batch()
    return summary
