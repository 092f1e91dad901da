"""A study-level search, already validated, independent of the protocol that asked it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from storage.index.person_names import fold_pattern
from storage.uids import is_valid_uid


class InvalidQuery(ValueError):
    """A matching key's value cannot be used."""


def parse_date(value: str, what: str) -> str:
    try:
        dt.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise InvalidQuery(f"{what}: {value!r} is not a date YYYYMMDD") from None
    return value


@dataclass(frozen=True)
class DateRange:
    """Inclusive bounds; an empty bound is open."""

    start: str = ""
    end: str = ""

    @classmethod
    def parse(cls, value: str, what: str = "StudyDate") -> DateRange:
        value = value.strip()
        if "-" not in value:
            day = parse_date(value, what)
            return cls(day, day)
        start, _, end = value.partition("-")
        if not start and not end:
            raise InvalidQuery(f"{what}: a range needs at least one bound")
        start = parse_date(start, what) if start else ""
        end = parse_date(end, what) if end else ""
        if start and end and start > end:
            raise InvalidQuery(f"{what}: range starts after it ends")
        return cls(start, end)


@dataclass(frozen=True)
class StudyQuery:
    patient_id: str = ""  # may hold the wildcards * and ?
    # Pseudonymous patient IDs the vault maps patient_id to (authorised re-identifying queries only).
    patient_pseudonyms: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    accession_number: str = ""
    study_date: DateRange | None = None
    patient_name: str = ""  # folded pattern, wildcards kept
    modality: str = ""
    limit: int = 100
    offset: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def uid_list(value: str) -> tuple[str, ...]:
        uids = tuple(v.strip() for v in value.replace("\\", ",").split(",") if v.strip())
        if not uids:
            raise InvalidQuery("StudyInstanceUID: empty list")
        for uid in uids:
            if not is_valid_uid(uid):
                raise InvalidQuery(f"StudyInstanceUID: {uid!r} is not a valid DICOM UID")
        return uids

    @staticmethod
    def name_pattern(value: str) -> str:
        return fold_pattern(value)
