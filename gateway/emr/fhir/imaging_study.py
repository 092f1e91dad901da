"""An indexed study as a FHIR R4 ImagingStudy (DICOM PS3.17 / FHIR ImagingStudy mapping), and the Endpoint
that serves its images over DICOMweb (WADO-RS)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from pydicom.uid import UID

from gateway.emr.fhir import codes
from gateway.emr.fhir.datetimes import fhir_datetime
from gateway.emr.identity import StudyIdentity
from storage.index.study_export import ExportInstance, ExportSeries, ExportStudy


def study_identifier(study_uid: str) -> dict[str, str]:
    return {"system": codes.DICOM_UID, "value": f"urn:oid:{study_uid}"}


def study_query(study_uid: str) -> dict[str, str]:
    """Search parameters finding the study's ImagingStudy (for conditional update)."""
    return {"identifier": f"{codes.DICOM_UID}|urn:oid:{study_uid}"}


def accession_identifier(accession: str, system: str) -> dict[str, Any]:
    identifier: dict[str, Any] = {
        "use": "usual",
        "type": {"coding": [{"system": codes.V2_0203, "code": "ACSN", "display": "Accession ID"}]},
        "value": accession,
    }
    return {**identifier, "system": system} if system else identifier


def accession_query(accession: str, system: str) -> dict[str, str]:
    return {"identifier": f"{system}|{accession}" if system else accession}


def endpoint(address: str) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "identifier": [{"system": codes.URI, "value": address}],
        "status": "active",
        "connectionType": {"system": codes.ENDPOINT_CONNECTION_TYPE, "code": "dicom-wado-rs"},
        "name": "PACS gateway DICOMweb (WADO-RS)",
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def _instance(instance: ExportInstance) -> dict[str, Any]:
    sop_class: dict[str, str] = {"system": codes.URI, "code": f"urn:oid:{instance.sop_class_uid}"}
    name = UID(instance.sop_class_uid).name
    if name and name != instance.sop_class_uid:
        sop_class["display"] = name
    out: dict[str, Any] = {"uid": instance.sop_instance_uid, "sopClass": sop_class}
    if instance.number is not None:
        out["number"] = instance.number
    return out


def _series(series: ExportSeries, identity: StudyIdentity, zone: ZoneInfo, endpoint_ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": series.series_uid}
    if series.number is not None:
        out["number"] = series.number
    out["modality"] = codes.modality(series.modality or "OT")
    if series.description:
        out["description"] = series.description
    out["numberOfInstances"] = len(series.instances)
    out["endpoint"] = [{"reference": endpoint_ref}]
    if series.body_part:
        out["bodySite"] = codes.body_site(series.body_part) or {"display": series.body_part}
    started = fhir_datetime(identity.original_date(series.started_date), series.started_time, zone)
    if started:
        out["started"] = started
    out["instance"] = [_instance(i) for i in series.instances]
    return out


def imaging_study(
    study: ExportStudy,
    identity: StudyIdentity,
    *,
    patient_ref: str,
    endpoint_ref: str,
    service_request_ref: str | None,
    accession_system: str,
    zone: ZoneInfo,
) -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = [study_identifier(study.study_uid)]
    if identity.accession_number:
        identifiers.append(accession_identifier(identity.accession_number, accession_system))
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": identifiers,
        "status": "available",
        "modality": [codes.modality(m) for m in study.modalities],
        "subject": {"reference": patient_ref},
    }
    started = fhir_datetime(identity.study_date if identity.dates_known else "", study.study_time, zone)
    if started:
        resource["started"] = started
    if service_request_ref:
        resource["basedOn"] = [{"reference": service_request_ref}]
    resource["endpoint"] = [{"reference": endpoint_ref}]
    resource["numberOfSeries"] = len(study.series)
    resource["numberOfInstances"] = study.number_of_instances
    if study.description:
        resource["description"] = study.description
    resource["series"] = [_series(s, identity, zone, endpoint_ref) for s in study.series]
    return resource
