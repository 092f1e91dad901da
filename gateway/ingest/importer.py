"""Bulk import of DICOM files and folders through the ingest entry point, filed directly.

Each file is offered to :class:`IngestService` like a C-STORE (validation and
rules alike), from the calling AE title ``IMPORT``. Its sink is a batch the
importer stores and indexes itself rather than the spool: the command reports
how many were stored, replaced or duplicates, which only filing knows, and it
runs whether or not a gateway serves (whose spool it could not open).
"""

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

from gateway.statuses import StoreStatus
from gateway.ingest.committer import Committer, Outcome
from gateway.ingest.instance import InstanceRejected, ReceivedInstance
from gateway.ingest.rules_stage import RulesStage
from gateway.ingest.service import IngestService, Source
from gateway.ingest.spool_record import SpooledInstance
from storage.index.database import IndexDatabaseError
from storage.object_store.base import ObjectStoreError

log = logging.getLogger(__name__)

IMPORT_SOURCE = "IMPORT"
_ATTEMPTS = 5


class _Batch:
    """The import's sink: accepted instances wait here to be filed together."""

    def __init__(self) -> None:
        self.instances: list[ReceivedInstance] = []

    def put(self, instance: SpooledInstance, data: bytes | bytearray | memoryview) -> None:
        self.instances.append(ReceivedInstance(instance.record, data, instance.vault))


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
    sink = _Batch()
    batch = sink.instances
    ingest = IngestService(rules.receive, sink, threads=1)
    source = Source("import", IMPORT_SOURCE, "")

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

    try:
        for path in iter_files(paths):
            waiting = len(batch)
            try:
                data = as_part10(path.read_bytes())
            except InstanceRejected as rejected:
                summary.rejected.append((path, rejected.reason))
            except OSError as exc:
                summary.rejected.append((path, f"cannot read file: {exc.strerror}"))
            else:
                outcome = ingest.store(data, source)
                if outcome.quarantined:
                    summary.quarantined += 1
                elif not outcome.stored:
                    summary.rejected.append((path, outcome.reason or "refused"))
            if len(batch) >= batch_size:
                file_batch()
            elif on_progress and len(batch) == waiting:  # not filed later: counted now
                on_progress(1)
        if batch:
            file_batch()
    finally:
        ingest.close()
    return summary
