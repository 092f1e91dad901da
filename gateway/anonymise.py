"""Offline de-identification of files and folders: ``pacs-gateway anonymise IN OUT``.

Each file goes through the same rules stage as a received instance, with the
destination ``export``. Output files are named by their new UIDs
(``OUT/<study>/<series>/<instance>.dcm``), so no name or ID of the input
folder tree is carried over; nothing is written for a file that is rejected
or set aside by a filter.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.ingest.importer import as_part10, iter_files
from gateway.ingest.instance import InstanceRejected
from gateway.ingest.rules_stage import Quarantined, RulesStage
from storage.index.records import VaultEntry

EXPORT = "export"


@dataclass
class AnonymiseSummary:
    written: int = 0
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    set_aside: list[tuple[Path, str]] = field(default_factory=list)
    vault_entries: int = 0

    def reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.rejected)


def anonymise_paths(
    paths: Iterable[Path],
    out: Path,
    stage: RulesStage,
    *,
    calling_ae: str = "",
    destination: str = EXPORT,
    on_progress: Callable[[int], None] | None = None,
    keep_vault: Callable[[list[VaultEntry]], None] | None = None,
) -> AnonymiseSummary:
    """De-identify every DICOM file under ``paths`` into ``out``; vault entries go to ``keep_vault`` in batches."""
    summary = AnonymiseSummary()
    pending: list[VaultEntry] = []
    sealed: set[tuple[str, str]] = set()  # each pseudonym once: a series repeats its patient, study and series
    out.mkdir(parents=True, exist_ok=True)
    for path in iter_files(paths):
        try:
            result = stage.receive(as_part10(path.read_bytes()), source_ae=calling_ae, destination=destination)
        except InstanceRejected as rejected:
            summary.rejected.append((path, rejected.reason))
        except OSError as exc:
            summary.rejected.append((path, f"cannot read file: {exc.strerror}"))
        except Exception as exc:  # one bad file must not stop a folder; its message may quote values
            summary.rejected.append((path, f"cannot de-identify ({type(exc).__name__})"))
        else:
            if isinstance(result, Quarantined):
                summary.set_aside.append((path, result.reason))
            else:
                record = result.record
                target = out / record.study_uid / record.series_uid / f"{record.sop_instance_uid}.dcm"
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(result.data)
                os.replace(tmp, target)
                summary.written += 1
                for entry in result.vault:
                    if (entry.kind, entry.pseudonym) not in sealed:
                        sealed.add((entry.kind, entry.pseudonym))
                        pending.append(entry)
                if keep_vault and len(pending) >= 1000:
                    keep_vault(pending)
                    summary.vault_entries += len(pending)
                    pending = []
        if on_progress:
            on_progress(1)
    if keep_vault and pending:
        keep_vault(pending)
        summary.vault_entries += len(pending)
    return summary
