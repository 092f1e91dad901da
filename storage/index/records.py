"""What the index keeps of one instance, as extracted at ingest."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OtherPatientID:
    patient_id: str
    issuer: str = ""
    type: str = ""


@dataclass(frozen=True)
class InstanceRecord:
    # Patient
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    # Study
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    # Series
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    performed_start_date: str
    performed_start_time: str
    # Instance
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    number_of_frames: int | None
    size: int
    object_key: str
    source_ae: str = ""
    other_patient_ids: tuple[OtherPatientID, ...] = field(default_factory=tuple)
    metadata_json: str = ""  # WADO-RS metadata (DICOM JSON, bulk data as tag markers); "" when not made
    pixel_offset: int | None = None  # where uncompressed pixel data starts in the stored object
    frame_length: int | None = None  # bytes per uncompressed frame
    checksum: str = ""  # SHA-256 (hex) of the stored object, set when filed

    def to_dict(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives, without its deep copy of every (immutable) value: once per instance."""
        data = {name: getattr(self, name) for name in _RECORD_FIELDS}
        data["other_patient_ids"] = tuple(dataclasses.asdict(other) for other in self.other_patient_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceRecord:
        others = tuple(OtherPatientID(**item) for item in data.get("other_patient_ids", ()))
        return cls(**{**data, "other_patient_ids": others})


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceRecord))


@dataclass(frozen=True)
class VaultEntry:
    """One sealed pseudonym -> original mapping, with the keyed digests it can be found by."""

    kind: str  # patient, study, series or instance
    pseudonym: str
    key_id: str
    nonce: bytes
    ciphertext: bytes
    lookups: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "pseudonym": self.pseudonym,
            "key_id": self.key_id,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "ciphertext": base64.b64encode(self.ciphertext).decode("ascii"),
            "lookups": list(self.lookups),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VaultEntry:
        return cls(
            kind=data["kind"],
            pseudonym=data["pseudonym"],
            key_id=data["key_id"],
            nonce=base64.b64decode(data["nonce"]),
            ciphertext=base64.b64decode(data["ciphertext"]),
            lookups=tuple(data.get("lookups", ())),
        )
