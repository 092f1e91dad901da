"""What of a request the audit trail keeps in clear: only what cannot be anyone's personal data.

People type query values, and a patient number typed into the wrong field is
still a patient number. So every value is kept as a keyed digest, except the
value of a parameter whose values cannot identify anyone when it has that
parameter's strict form: a UID, a small number, a DICOM keyword, one of an
enumeration. Parameter names are kept when they are the API's own words or
DICOM keywords or tags. A path is read the way the server routes it: the
route's own words are kept, and each route parameter (a study UID, a frame
list, a share's number...) is held to its parameter's strict form the same
way, wherever in the path it stands; the rest is digested.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydicom.datadict import dictionary_has_tag, tag_for_keyword

from gateway.vault import KINDS
from storage.uids import is_valid_uid

# Modality defined terms (PS3.3 C.7.3.1.1.1).
_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS MG MR "
    "M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT "
    "RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC".split()
)
_MEDIA_TYPES = frozenset(
    {"application/dicom", "application/dicom+json", "application/dicom+xml", "application/json", "application/octet-stream",
     "application/pdf", "image/jpeg", "image/png", "image/gif", "image/jp2", "video/mpeg", "video/mp4", "text/html",
     "text/plain", "text/xml", "multipart/related"}
)  # fmt: skip
_INTEGER = re.compile(r"\d{1,6}")
_NUMBER = re.compile(r"-?\d{1,6}(\.\d{1,6})?")
_FRAMES = re.compile(r"[1-9]\d{0,5}(,[1-9]\d{0,5})*")  # no leading zero: a frame number is never written 004512
_ROW_NUMBER = re.compile(r"[1-9]\d{0,9}")  # a share's or an outbox message's number, as the API gives them
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_PSEUDONYM = re.compile(r"PGW[A-Z2-7]{17}")  # a pseudonymous patient ID (dicom_rules.pseudonyms)
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?")
_CHARACTER_SET = re.compile(r"|ISO_IR \d{1,3}|ISO 2022 IR \d{1,3}|GB18030|GBK")


def dicom_attribute(name: str) -> bool:
    """A DICOM keyword, or a tag as 8 hexadecimal digits, of the standard's dictionary."""
    if _TAG.fullmatch(name):
        return dictionary_has_tag(int(name, 16))
    return tag_for_keyword(name) is not None


def uid(value: str) -> bool:
    """A UID as UIDs are made: not a number, nor a date, that happens to follow the UID grammar.

    Dotted dates (1.12.1985, 2.10.85) follow the grammar, and people type them where UIDs go. A date has three
    components. A UID an organisation makes is its root (1.2.840.x, 1.3.6.1.4.1.x, 1.2.392.x...: three components
    or more) and arcs of its own below it: four components at least. The one shorter form in use is 2.25.<a UUID
    as an integer> (PS3.5 B.2), whose integer has more than 20 digits for any UUID with its version bits set, and
    that no date, patient number or citizen ID has: at least 17 are asked for.
    """
    if not is_valid_uid(value) or value.split(".", 1)[0] not in ("0", "1", "2"):
        return False
    components = value.split(".")
    return len(components) >= 4 or (len(components) == 3 and value.startswith("2.25.") and len(components[2]) >= 17)


def _each(check: Callable[[str], bool]) -> Callable[[str], bool]:
    """Every item of a backslash- or comma-separated list passes ``check``."""
    return lambda value: all(check(item.strip()) for item in re.split(r"[\\,]", value))


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: pattern.fullmatch(value) is not None


def _one_of(*choices: str) -> Callable[[str], bool]:
    return _each(lambda item: item in choices)


def _attribute_list(value: str) -> bool:
    return _each(lambda item: item == "all" or dicom_attribute(item))(value)


def _order(value: str) -> bool:
    return _each(lambda item: dicom_attribute(item.lstrip("+-").strip()))(value)


_CLEAR_VALUES: dict[str, Callable[[str], bool]] = {
    **dict.fromkeys(
        ("StudyInstanceUID", "0020000D", "SeriesInstanceUID", "0020000E", "SOPInstanceUID", "00080018", "SOPClassUID",
         "00080016", "studyUID", "seriesUID", "objectUID", "transferSyntax"),
        _each(uid),
    ),
    **dict.fromkeys(("limit", "offset", "frameNumber", "rows", "columns", "imageQuality", "quality"), _matches(_INTEGER)),
    **dict.fromkeys(("windowCenter", "windowWidth"), _matches(_NUMBER)),
    **dict.fromkeys(("window", "viewport"), _each(_matches(_NUMBER))),
    **dict.fromkeys(("Modality", "00080060", "ModalitiesInStudy", "00080061"), _each(lambda item: item in _MODALITIES)),
    **dict.fromkeys(("QueryRetrieveLevel", "00080052"), _one_of("PATIENT", "STUDY", "SERIES", "IMAGE")),
    **dict.fromkeys(("StudyStatusID", "0032000A"), _one_of("UNREAD", "IN PROGRESS", "READ")),
    **dict.fromkeys(("SpecificCharacterSet", "00080005"), _each(_matches(_CHARACTER_SET))),
    "includefield": _attribute_list,
    "orderby": _order,
    "fuzzymatching": _one_of("true", "false"),
    "requestType": _one_of("WADO"),
    "contentType": _each(lambda item: item.split(";")[0].strip() in _MEDIA_TYPES),
    "state": _one_of("pending", "failed", "delivered", "open", "resolved", "all"),
    "since": _matches(_ISO_TIME),
}  # fmt: skip
_PARAMETERS = frozenset(_CLEAR_VALUES) | {"user"}  # the API's own parameter names (``user``: a name, digested)
_PATH_WORDS = frozenset(
    {"dicom-web", "studies", "series", "instances", "metadata", "frames", "rendered", "thumbnail", "bulkdata", "report",
     "final", "report-templates", "shares", "vault", "patient", "study", "instance", "audit", "auth", "me", "login", "emr",
     "outbox", "retry", "reconciliation", "resolve", "wado", "health", "metrics"}
)  # fmt: skip


def clear_key(key: str) -> bool:
    return key in _PARAMETERS or dicom_attribute(key)


def clear_value(key: str, value: str) -> bool:
    rule = _CLEAR_VALUES.get(key)
    return rule is not None and rule(value)


# What each route parameter's value must be to be kept in clear in a path (see gateway.http routes).
_CLEAR_SEGMENTS: dict[str, Callable[[str], bool]] = {
    **dict.fromkeys(("study", "series", "instance"), uid),
    "frames": _matches(_FRAMES),
    "frame": _matches(_FRAMES),
    "id": _matches(_ROW_NUMBER),
    "tag": lambda value: _TAG.fullmatch(value) is not None and dicom_attribute(value),
    "kind": lambda value: value in KINDS,
    "pseudonym": lambda value: _PSEUDONYM.fullmatch(value) is not None or uid(value),
}


def clear_segment(parameter: str, value: str) -> bool:
    """The value of a route parameter (``{study}``, ``{frames}``...) has its parameter's strict form."""
    rule = _CLEAR_SEGMENTS.get(parameter)
    return rule is not None and rule(value)


def clear_word(segment: str) -> bool:
    """One of the API's own words: what is kept of a path that matched no route."""
    return segment in _PATH_WORDS
