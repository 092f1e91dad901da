"""HL7 v2 messages as an EMR or RIS sends them (ADT, ORM^O01, OMI^O23), for the tests and the benchmark.

Nothing here comes from a real patient.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tests.factory import CITIZEN_ID, INSURANCE_NUMBER

_control_ids = itertools.count(1)


def control_id() -> str:
    return f"CTL{next(_control_ids):06d}"


@dataclass(frozen=True)
class Person:
    mrn: str = "MRN-0001"
    issuer: str = "BV-CHORAY"
    family: str = "Nguyễn"
    given: str = "Văn An"
    birth: str = "19800101"
    sex: str = "M"
    citizen: str = CITIZEN_ID
    insurance: str = INSURANCE_NUMBER


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its non-empty fields by number."""
    last = max(fields, default=0)
    return "|".join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def msh(kind: str, cid: str, version: str = "2.5") -> str:
    return f"MSH|^~\\&|EMR|BV-CHORAY|PACSGW|RADIOLOGY|20261129080000||{kind}|{cid}|P|{version}"


def pid(p: Person) -> str:
    ids = [f"{p.mrn}^^^{p.issuer}^MR"]
    if p.citizen:
        ids.append(f"{p.citizen}^^^CCCD^NI")
    if p.insurance:
        ids.append(f"{p.insurance}^^^BHYT^HC")
    return segment("PID", {1: "1", 3: "~".join(ids), 5: f"{p.family}^{p.given}", 7: p.birth, 8: p.sex})


def message(*segments: str) -> str:
    return "\r".join(segments) + "\r"


def adt(event: str, person: Person, cid: str | None = None) -> str:
    cid = cid or control_id()
    return message(msh(f"ADT^{event}^ADT_A01", cid), f"EVN|{event}|20261129080000", pid(person), "PV1|1|O")


def a40(survivor: Person, merged_mrn: str, merged_issuer: str = "BV-CHORAY", cid: str | None = None) -> str:
    cid = cid or control_id()
    mrg = segment("MRG", {1: f"{merged_mrn}^^^{merged_issuer}^MR"})
    return message(msh("ADT^A40^ADT_A39", cid), "EVN|A40|20261129080000", pid(survivor), mrg)


@dataclass(frozen=True)
class Order:
    placer: str
    accession: str
    modality: str = "CT"
    code: str = "CT-CHEST"
    description: str = "CT ngực"
    when: str = "202612011030"
    station: str = ""  # OBR-21 (ORM) or IPC-9 (OMI)
    referring: str = "BS001^Trần^Thị Bình"
    sps_id: str = ""
    study_uid: str = ""
    protocol: str = ""  # ORM: OBR-4's alternate identifier (code^text^system), the protocol to run


def orm(control: str, person: Person | None, order: Order, cid: str | None = None) -> str:
    cid = cid or control_id()
    orc = segment("ORC", {1: control, 2: f"{order.placer}^EMR", 7: f"^^^{order.when}", 12: order.referring})
    obr = segment(
        "OBR",
        {1: "1", 2: f"{order.placer}^EMR", 4: f"{order.code}^{order.description}^L" + (f"^{order.protocol}" if order.protocol else ""), 18: order.accession,
         19: order.accession, 20: order.sps_id, 21: order.station, 24: order.modality},
    )  # fmt: skip
    parts = [msh("ORM^O01^ORM_O01", cid)] + ([pid(person), "PV1|1|O"] if person else []) + [orc, obr]
    if order.study_uid:
        parts.append(f"ZDS|{order.study_uid}^PACSGW^Application^DICOM")
    return message(*parts)


def omi(control: str, person: Person, order: Order, cid: str | None = None) -> str:
    cid = cid or control_id()
    orc = segment("ORC", {1: control, 2: f"{order.placer}^EMR", 12: order.referring})
    tq1 = segment("TQ1", {1: "1", 7: order.when})
    obr = segment("OBR", {1: "1", 2: f"{order.placer}^EMR", 4: f"{order.code}^{order.description}^L"})
    ipc = segment(
        "IPC",
        {1: order.accession, 2: f"RP-{order.accession}", 3: order.study_uid, 4: order.sps_id or f"SPS-{order.accession}",
         5: order.modality, 6: "P1^Protocol một^L", 7: "CT ROOM 1", 8: "PHONG 1", 9: order.station},
    )  # fmt: skip
    return message(msh("OMI^O23^OMI_O23", cid), pid(person), "PV1|1|O", orc, tq1, obr, ipc)
