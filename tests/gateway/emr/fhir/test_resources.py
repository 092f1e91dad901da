"""ImagingStudy, DiagnosticReport and Endpoint as mapped from the index, accepted by a real (validating) FHIR R4
server; DICOM dates and times in the hospital's zone; the code tables."""

from __future__ import annotations

import base64
from zoneinfo import ZoneInfo

from gateway.emr.fhir import codes
from gateway.emr.fhir.datetimes import fhir_datetime
from gateway.emr.fhir.diagnostic_report import diagnostic_report, report_identifier, report_query
from gateway.emr.fhir.imaging_study import endpoint, imaging_study, study_query
from gateway.emr.identity import UNKNOWN, study_identity
from storage.index.study_export import read_study
from tests.factory import Patient, ct_series
from tests.gateway.emr.conftest import ACCESSION_SYSTEM, create, emr_patient, unique
from tests.peers.test_fhir_peer import call
from tests.storage.conftest import records

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
FINDINGS = "- Phổi hai bên sáng đều.\n- Không tràn dịch <màng phổi> & trung thất."
IMPRESSION = "Không thấy bất thường."


def test_dicom_dates_and_times() -> None:
    assert fhir_datetime("20240315", "101500", HCM) == "2024-03-15T10:15:00+07:00"
    assert fhir_datetime("20240315", "101500.123456", HCM) == "2024-03-15T10:15:00+07:00"
    assert fhir_datetime("20240315", "1015", HCM) == "2024-03-15T10:15:00+07:00"
    assert fhir_datetime("20240315", "", HCM) == "2024-03-15"
    assert fhir_datetime("20240315", "2561", HCM) == "2024-03-15"  # not a time: the date alone
    assert fhir_datetime("2024031", "101500", HCM) is None and fhir_datetime("20241345", "", HCM) is None
    assert fhir_datetime("20240315", "101500", ZoneInfo("UTC")) == "2024-03-15T10:15:00+00:00"


def test_code_tables() -> None:
    assert codes.modality("MR") == {"system": codes.DCM, "code": "MR", "display": "Magnetic Resonance"}
    assert codes.modality("ZZ") == {"system": codes.DCM, "code": "ZZ"}
    assert codes.body_site(" lspine ") == {"system": codes.SNOMED, "code": "122496007", "display": "Lumbar spine"}
    assert codes.body_site("ELBOWS") is None
    assert codes.report_code(["CT"])["code"] == "18747-6"
    assert codes.report_code(["MR", "SR"])["code"] == "18755-9"  # SR alongside does not make it mixed
    assert codes.report_code(["CT", "MR"])["code"] == codes.report_code(["XA"])["code"] == "18748-4"


def test_imaging_study_and_report_are_valid_r4_and_idempotent(fhir_base: str, sqlite_index) -> None:
    mrn = unique("MRN")
    series = ct_series(2, size=16, patient=Patient(patient_id=mrn), accession="ACC-MAP")
    more = ct_series(1, size=16, patient=Patient(patient_id=mrn), study_uid=series[0].StudyInstanceUID, accession="ACC-MAP")
    more[0].SeriesNumber, more[0].BodyPartExamined = 2, "ELBOWS"  # unknown to the table: as text
    sqlite_index.commit(records(series + more))
    study = read_study(sqlite_index.engine, series[0].StudyInstanceUID)
    identity = study_identity(study, None)
    patient_ref = emr_patient(fhir_base, mrn=mrn)
    endpoint_body = create(fhir_base, endpoint("http://pacs.example.vn/dicom-web"))
    assert endpoint_body["connectionType"]["code"] == "dicom-wado-rs"
    endpoint_ref = f"Endpoint/{endpoint_body['id']}"

    resource = imaging_study(
        study, identity, patient_ref=patient_ref, endpoint_ref=endpoint_ref, service_request_ref=None,
        accession_system=ACCESSION_SYSTEM, zone=HCM,
    )  # fmt: skip
    query = "&".join(f"{k}={v}" for k, v in study_query(study.study_uid).items())
    stored = call("PUT", f"{fhir_base}/ImagingStudy?{query}", resource)
    assert stored.status == 201, stored.body
    body = stored.body
    assert body["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_uid}"}
    assert body["identifier"][1]["type"]["coding"][0]["code"] == "ACSN"
    assert (body["identifier"][1]["system"], body["identifier"][1]["value"]) == (ACCESSION_SYSTEM, "ACC-MAP")
    assert (body["status"], body["subject"]["reference"], body["started"]) == ("available", patient_ref, "2024-03-15T10:15:00+07:00")
    assert (body["numberOfSeries"], body["numberOfInstances"], body["endpoint"]) == (2, 3, [{"reference": endpoint_ref}])
    assert "basedOn" not in body
    first, second = body["series"]
    assert (first["number"], first["numberOfInstances"], first["bodySite"]["code"]) == (1, 2, "816094009")
    assert (second["number"], second["bodySite"]) == (2, {"display": "ELBOWS"})
    assert first["instance"][0]["sopClass"] == {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2", "display": "CT Image Storage"}
    assert [i["number"] for i in first["instance"]] == [1, 2]

    payload = {
        "study_uid": study.study_uid, "accession_number": "ACC-MAP", "patient_id": mrn, "modalities": ["CT"],
        "study_description": "CT ngực", "findings": FINDINGS, "impression": IMPRESSION,
        "finalized_at": "2024-03-16T02:00:00+00:00", "finalized_by": "dr.lan", "finalized_by_name": "BS. Lê Thị Lan",
    }  # fmt: skip
    report = diagnostic_report(
        payload, patient_ref=patient_ref, imaging_study_ref=f"ImagingStudy/{body['id']}", service_request_ref=None,
        effective="2024-03-15T10:15:00+07:00",
    )  # fmt: skip
    rquery = "&".join(f"{k}={v}" for k, v in report_query(study.study_uid).items())
    created = call("PUT", f"{fhir_base}/DiagnosticReport?{rquery}", report)
    again = call("PUT", f"{fhir_base}/DiagnosticReport?{rquery}", report)
    assert created.status == 201 and again.status == 200 and again.body["id"] == created.body["id"], created.body
    dr = again.body
    assert dr["identifier"] == [report_identifier(study.study_uid)]
    assert (dr["status"], dr["conclusion"], dr["issued"]) == ("final", IMPRESSION, "2024-03-16T02:00:00+00:00")
    assert dr["category"][0]["coding"][0] == {"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}
    assert dr["code"]["coding"][0]["code"] == "18747-6" and dr["code"]["text"] == "CT ngực"
    assert dr["imagingStudy"] == [{"reference": f"ImagingStudy/{body['id']}"}]
    assert dr["performer"] == [{"type": "Practitioner", "display": "BS. Lê Thị Lan"}]
    text = base64.b64decode(dr["presentedForm"][0]["data"]).decode("utf-8")
    assert FINDINGS in text and IMPRESSION in text
    assert "&lt;màng phổi&gt; &amp; trung thất" in dr["text"]["div"]


def test_without_a_known_identity_dates_are_left_out(sqlite_index) -> None:
    series = ct_series(1, size=16)
    sqlite_index.commit(records(series))
    study = read_study(sqlite_index.engine, series[0].StudyInstanceUID)
    resource = imaging_study(study, UNKNOWN, patient_ref="Patient/p", endpoint_ref="Endpoint/e", service_request_ref=None,
                             accession_system="", zone=HCM)  # fmt: skip
    assert "started" not in resource and len(resource["identifier"]) == 1
