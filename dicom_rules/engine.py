"""The de-identification engine: one walk over a dataset, into every sequence item, applying a policy.

Each element gets one action. Listed attributes take theirs from Table E.1-1
under the chosen options; compound codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) are
resolved by the attribute's Type in the instance's IOD. Attributes the table
does not list are judged by what their VR can hold (``_unlisted_code``):
names, free text, dates, AE titles and URIs are removed unless known safe;
UIDs other than the standard's own are replaced; sequences are kept and
cleaned item by item. Private elements go, except those on the safe-private
list under Retain Safe Private.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import cast

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from dicom_rules.attribute_types import TypeTable, type_table
from dicom_rules.dates import shift_date, shift_datetime
from dicom_rules.profile import (
    Option,
    SafePrivate,
    builtin_safe_private,
    method_codes,
    profile_table,
    resolve_code,
    safe_attribute_tags,
)
from dicom_rules.pseudonyms import PseudonymKey
from dicom_rules.text_cleaning import TextCleaner
from dicom_rules.values import text_value

TEXT_VRS = frozenset({"LO", "LT", "ST", "UT", "SH", "UC"})
DATE_VRS = frozenset({"DA", "DT", "TM"})
_MAX_LENGTH = {"SH": 16, "CS": 16, "AE": 16, "LO": 64, "PN": 64, "UC": 64, "LT": 52, "ST": 52, "UT": 52}
_DUMMY = {
    "PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D",
    "IS": "0", "DS": "0", "UR": "urn:removed",
}  # fmt: skip
_STANDARD_UID_ROOT = "1.2.840.10008."
_PATIENT_NARRATIVE_GROUPS = frozenset({0x0010, 0x0038})  # Patient and Visit: comments, history, occupation
TAG_PATIENT_ID = 0x00100020
TAG_PATIENT_NAME = 0x00100010
TAG_ACCESSION = 0x00080050
TAG_OVERLAY_DATA_ELEMENT = 0x3000


class Mode(str, Enum):
    IDENTIFIED = "identified"
    PSEUDONYMISED = "pseudonymised"
    ANONYMISED = "anonymised"


class OverrideAction(str, Enum):
    KEEP = "keep"
    REMOVE = "remove"
    REPLACE = "replace"
    HASH = "hash"


@dataclass(frozen=True)
class Override:
    action: OverrideAction
    value: str | None = None


@dataclass(frozen=True)
class Policy:
    """What a rule asks of the engine."""

    mode: Mode
    options: frozenset[Option] = frozenset()
    overrides: dict[int, Override] = field(default_factory=dict)
    private_overrides: dict[SafePrivate, Override] = field(default_factory=dict)  # keep or remove


@dataclass
class OriginalIdentity:
    """What the instance said about its patient and study before de-identification (for the vault)."""

    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    other_patient_ids: list[dict[str, str]] = field(default_factory=list)
    accession_number: str = ""
    study_date: str = ""
    study_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_instance_uid: str = ""
    date_offset_days: int = 0


_IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "PatientBirthDate", "AccessionNumber",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "NameOfPhysiciansReadingStudy",
    "RequestingPhysician", "PhysiciansOfRecord", "InstitutionName", "InstitutionAddress", "StationName",
    "DeviceSerialNumber", "MedicalRecordLocator", "ResponsiblePerson", "MilitaryRank", "CountryOfResidence",
    "RegionOfResidence", "ResponsibleOrganization", "PatientInsurancePlanCodeSequence",
)  # fmt: skip




def _identifying_values(ds: Dataset) -> list[str]:
    values = [text_value(ds, kw) for kw in _IDENTIFYING_KEYWORDS if not kw.endswith("Sequence")]
    for item in ds.get("OtherPatientIDsSequence") or ():
        values.append(text_value(item, "PatientID"))
    return [v for v in values if v]


@cache
def _uid_kept_as_is(tag: int) -> bool:
    """UIDs naming a class, syntax or coding scheme, never an instance: they stay even when not from the standard's root."""
    keyword = keyword_for_tag(tag)
    return any(part in keyword for part in ("SOPClass", "TransferSyntax", "CodingScheme", "ContextUID", "MappingResource"))


def _vr_of(ds: Dataset, tag: int) -> str:
    raw = ds._dict[cast(BaseTag, tag)]  # the dataset's own keys: BaseTag already
    vr = raw.VR
    if vr:
        return str(vr)
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


class Deidentifier:
    """Applies one policy with one key; thread-safe (per-instance state lives in ``_Walk``)."""

    def __init__(self, policy: Policy, key: PseudonymKey) -> None:
        if policy.mode is Mode.IDENTIFIED:
            raise ValueError("identified mode keeps instances as received; there is nothing to apply")
        self.policy = policy
        self.key = key
        table = profile_table()
        self.codes = {tag: resolve_code(row, policy.options) for tag, row in table.rows.items()}
        self.overlay_codes = {el: resolve_code(row, policy.options) for el, row in table.overlay_rows.items()}
        self.curve_code = resolve_code(table.curve_row, policy.options)
        self.safe_tags = safe_attribute_tags()
        keep_private = Option.RETAIN_SAFE_PRIVATE in policy.options
        self.safe_private = builtin_safe_private() if keep_private else frozenset()
        self.shift_dates = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in policy.options
        self.keep_dates = Option.RETAIN_LONGITUDINAL_FULL_DATES in policy.options
        # Whether any action may clean free text, which needs the instance's identifying values.
        self.cleans_text = any(code == "C" for code in (*self.codes.values(), *self.overlay_codes.values()))

    def apply(self, ds: Dataset, *, pixels_cleaned: bool = False) -> OriginalIdentity:
        """De-identify ``ds`` in place (file meta included) and return what it said before.

        ``pixels_cleaned`` records that burned-in text was blanked (Clean Pixel Data Option).
        """
        identity = OriginalIdentity(
            patient_id=text_value(ds, "PatientID"),
            issuer_of_patient_id=text_value(ds, "IssuerOfPatientID"),
            patient_name=text_value(ds, "PatientName"),
            patient_birth_date=text_value(ds, "PatientBirthDate"),
            patient_sex=text_value(ds, "PatientSex"),
            other_patient_ids=[
                {"id": text_value(i, "PatientID"), "issuer": text_value(i, "IssuerOfPatientID"), "type": text_value(i, "TypeOfPatientID")}
                for i in ds.get("OtherPatientIDsSequence") or ()
            ],
            accession_number=text_value(ds, "AccessionNumber"),
            study_date=text_value(ds, "StudyDate"),
            study_id=text_value(ds, "StudyID"),
            study_uid=text_value(ds, "StudyInstanceUID"),
            series_uid=text_value(ds, "SeriesInstanceUID"),
            sop_instance_uid=text_value(ds, "SOPInstanceUID"),
        )
        # Without a patient ID, each study stands for its own patient (pseudonym and date offset).
        patient_key = (identity.patient_id, identity.issuer_of_patient_id)
        if not identity.patient_id:
            patient_key = ("study:" + identity.study_uid, "")
        offset = self.key.date_offset_days(*patient_key)
        identity.date_offset_days = offset if self.shift_dates else 0
        walk = _Walk(self, type_table(text_value(ds, "SOPClassUID")), offset)
        if self.cleans_text:
            walk.identifying = _identifying_values(ds)  # read before the walk changes them
        walk.clean(ds, depth=0)
        self._set_patient_pseudonym(ds, self.key.patient_id(*patient_key))
        self._record_method(ds, pixels_cleaned)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return identity

    def _set_patient_pseudonym(self, ds: Dataset, pseudonym: str) -> None:
        for tag, value in ((TAG_PATIENT_ID, pseudonym), (TAG_PATIENT_NAME, pseudonym)):
            if tag not in self.policy.overrides:
                ds[tag] = DataElement(tag, "LO" if tag == TAG_PATIENT_ID else "PN", value)

    def _record_method(self, ds: Dataset, pixels_cleaned: bool) -> None:
        codes = method_codes()
        ds.PatientIdentityRemoved = "YES"
        names = ["basic_profile", *sorted(o.value for o in self.policy.options)]
        if pixels_cleaned:
            names.append("clean_pixel_data")
        ds.DeidentificationMethod = ["PS3.15 E.1-1 2024b", self.policy.mode.value]
        items = []
        for name in names:
            value, meaning = codes[name]
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if self.shift_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif self.keep_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"


class _Walk:
    """The state of de-identifying one instance."""

    def __init__(self, engine: Deidentifier, types: TypeTable, offset: int) -> None:
        self.engine = engine
        self.key: PseudonymKey = engine.key
        self.types = types
        self.offset = offset
        self.identifying: list[str] = []
        self._cleaner: TextCleaner | None = None

    @property
    def cleaner(self) -> TextCleaner:
        if self._cleaner is None:
            self._cleaner = TextCleaner(self.identifying)
        return self._cleaner

    def clean(self, ds: Dataset, depth: int) -> None:
        engine = self.engine
        overrides = engine.policy.overrides
        creators: dict[tuple[int, int], str] = {}
        removed_overlays: set[int] = set()
        for tag in map(int, list(ds.keys())):  # plain ints: BaseTag compares in Python, slowly
            group, element = tag >> 16, tag & 0xFFFF
            if element == 0 or group == 0x0002:
                if element == 0:
                    del ds[tag]  # group lengths are retired and would be wrong after cleaning
                continue
            if group & 1:
                self._private(ds, tag, creators)
                continue
            if tag in overrides:
                self._override(ds, tag, overrides[tag], depth)
                continue
            if tag == TAG_ACCESSION:
                self._accession(ds)
                continue
            if 0x5000 <= group <= 0x50FF:
                code = engine.curve_code
            elif 0x6000 <= group <= 0x60FF and element in engine.overlay_codes:
                code = engine.overlay_codes[element]
            else:
                code = engine.codes.get(tag) or self._unlisted_code(ds, tag)
            self._act(ds, tag, code, depth)
            if 0x6000 <= group <= 0x60FF and element == TAG_OVERLAY_DATA_ELEMENT and tag not in ds:
                removed_overlays.add(group)
        for tag in list(ds.keys()):
            if (tag >> 16) in removed_overlays:
                del ds[tag]  # an overlay plane without its data would be invalid
        self._drop_empty_private_blocks(ds)

    def _accession(self, ds: Dataset) -> None:
        element = ds[TAG_ACCESSION]
        element.value = self.key.accession(str(element.value).strip()) if element.value else None

    def _unlisted_code(self, ds: Dataset, tag: int) -> str:
        engine = self.engine
        if tag in engine.safe_tags:
            return "K"
        vr = _vr_of(ds, tag)
        if vr == "SQ":
            return "K"
        if vr == "UI":
            return "U"
        if vr in DATE_VRS:
            if engine.keep_dates:
                return "K"
            return "C" if engine.shift_dates else "X/Z/D"
        if vr == "UN":
            return "X"
        if vr in TEXT_VRS or vr in ("PN", "AE", "UR", "AS"):
            return "X/Z/D"  # Clean Descriptors covers the descriptors the table names, not unknown text
        return "K"

    def _act(self, ds: Dataset, tag: int, code: str, depth: int) -> None:
        if "/" in code:
            code = self._by_type(tag, code, depth)
        if code == "K":
            if _vr_of(ds, tag) == "SQ":
                self._recurse(ds, tag, depth)
        elif code == "X":
            del ds[tag]
        elif code == "Z":
            self._empty(ds, tag)
        elif code == "D":
            self._dummy(ds, tag, depth)
        elif code == "U":
            self._replace_uids(ds, tag, depth)
        elif code == "C":
            self._clean_value(ds, tag, depth)
        else:  # pragma: no cover - codes are validated when the table loads
            raise ValueError(f"unknown action {code}")

    def _by_type(self, tag: int, code: str, depth: int) -> str:
        kind = self.types.type_of(tag, depth)
        if code == "X/Z/U*":
            return {1: "U", 2: "Z"}.get(kind, "X")
        if code == "Z/D":
            return "D" if kind == 1 else "Z"
        if code == "X/Z":
            return {1: "D", 2: "Z"}.get(kind, "X")
        if code == "X/D":
            return "D" if kind in (1, 2) else "X"
        return {1: "D", 2: "Z"}.get(kind, "X")  # X/Z/D

    def _recurse(self, ds: Dataset, tag: int, depth: int) -> None:
        for item in ds[tag].value or ():
            self.clean(item, depth + 1)

    def _empty(self, ds: Dataset, tag: int) -> None:
        vr = _vr_of(ds, tag)
        ds[tag] = DataElement(tag, vr, Sequence() if vr == "SQ" else None)

    def _dummy(self, ds: Dataset, tag: int, depth: int) -> None:
        vr = _vr_of(ds, tag)
        if vr == "SQ":
            self._recurse(ds, tag, depth)  # a sequence's dummy is its own items, cleaned
        elif vr == "UI":
            self._replace_uids(ds, tag, depth)
        elif vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
            ds[tag] = DataElement(tag, vr, b"\x00\x00" if vr in ("OB", "OW", "UN") else b"\x00" * 8)
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"):
            ds[tag] = DataElement(tag, vr, 0)
        else:
            ds[tag] = DataElement(tag, vr, _DUMMY.get(vr, "REMOVED"))

    def _replace_uids(self, ds: Dataset, tag: int, depth: int) -> None:
        vr = _vr_of(ds, tag)
        if vr == "SQ":
            self._recurse(ds, tag, depth)
            return
        if vr != "UI" or _uid_kept_as_is(tag) or Option.RETAIN_UIDS in self.engine.policy.options:
            return
        element = ds[tag]
        values = element.value
        if not values:
            return
        mapped = [self._uid(str(v)) for v in (values if isinstance(values, (list, MultiValue)) else [values])]
        element.value = mapped if len(mapped) > 1 else mapped[0]

    def _uid(self, value: str) -> str:
        value = value.strip().rstrip("\x00")
        if not value or value.startswith(_STANDARD_UID_ROOT):
            return value
        return self.key.uid(value)

    def _clean_value(self, ds: Dataset, tag: int, depth: int) -> None:
        vr = _vr_of(ds, tag)
        if vr == "SQ":
            self._recurse(ds, tag, depth)
        elif vr in ("DA", "DT"):
            self._shift(ds, tag, vr, depth)
        elif vr == "AE":
            element = ds[tag]
            if element.value:
                element.value = self.key.hashed(str(element.value), 16)
        elif vr in TEXT_VRS and (tag >> 16) in _PATIENT_NARRATIVE_GROUPS:
            self._act(ds, tag, "X/Z/D", depth)  # narrative about the patient: no pattern can clean it reliably
        elif vr in TEXT_VRS or vr == "PN":
            element = ds[tag]
            values = element.value
            if isinstance(values, (list, MultiValue)):
                element.value = [self.cleaner.clean(str(v)) for v in values]
            elif values:
                element.value = self.cleaner.clean(str(values))
        elif vr in ("OB", "UN") and (tag >> 16) not in range(0x5000, 0x6100):
            del ds[tag]  # binary notes (Maker Note, Device Setting Description) cannot be read to be cleaned

    def _shift(self, ds: Dataset, tag: int, vr: str, depth: int) -> None:
        if not self.engine.shift_dates:
            self._act(ds, tag, "X/Z/D", depth)
            return
        element = ds[tag]
        values = element.value
        items = [str(v) for v in values] if isinstance(values, (list, MultiValue)) else [str(values or "")]
        shift = shift_date if vr == "DA" else shift_datetime
        shifted = [shift(v, self.offset) if v else "" for v in items]
        if any(s is None for s in shifted):
            self._act(ds, tag, "X/Z/D", depth)  # not a date we can move: do not keep it
            return
        element.value = shifted if len(shifted) > 1 else shifted[0]

    def _override(self, ds: Dataset, tag: int, override: Override, depth: int) -> None:
        action = override.action
        if action is OverrideAction.KEEP:
            self._act(ds, tag, "K", depth)
        elif action is OverrideAction.REMOVE:
            del ds[tag]
        elif action is OverrideAction.REPLACE:
            ds[tag] = DataElement(tag, _vr_of(ds, tag), override.value)
        else:
            vr = _vr_of(ds, tag)
            if vr in ("UI", "SQ"):
                self._act(ds, tag, "U", depth)
                return
            element = ds[tag]
            if element.value not in (None, ""):
                        element.value = self.key.hashed(str(element.value), _MAX_LENGTH.get(vr, 16))

    def _private(self, ds: Dataset, tag: int, creators: dict[tuple[int, int], str]) -> None:
        group, element = tag >> 16, tag & 0xFFFF
        if 0x0010 <= element <= 0x00FF:
            creators[(group, element)] = str(ds[tag].value or "").strip()
            return  # creators go with their last element (_drop_empty_private_blocks)
        if element < 0x1000:
            del ds[tag]
            return
        creator = creators.get((group, element >> 8), "")
        ident = SafePrivate(creator, group, element & 0xFF)
        override = self.engine.policy.private_overrides.get(ident)
        keep = override.action is OverrideAction.KEEP if override is not None else ident in self.engine.safe_private
        if keep:
            if _vr_of(ds, tag) == "SQ":
                self._recurse(ds, tag, 1)
            return
        del ds[tag]

    @staticmethod
    def _drop_empty_private_blocks(ds: Dataset) -> None:
        used = {(tag >> 16, (tag & 0xFFFF) >> 8) for tag in ds.keys() if (tag >> 16) & 1 and (tag & 0xFFFF) >= 0x1000}
        for tag in list(ds.keys()):
            group, element = tag >> 16, tag & 0xFFFF
            if group & 1 and 0x0010 <= element <= 0x00FF and (group, element) not in used:
                del ds[tag]
