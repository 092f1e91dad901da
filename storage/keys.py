"""Object keys: built from validated UIDs only, so no PHI ever lands in a key."""

from __future__ import annotations

from storage.uids import validate_uid


def instance_key(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    return (
        f"studies/{validate_uid(study_uid, 'Study Instance UID')}"
        f"/series/{validate_uid(series_uid, 'Series Instance UID')}"
        f"/instances/{validate_uid(sop_instance_uid, 'SOP Instance UID')}.dcm"
    )
