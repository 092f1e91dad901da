"""QIDO-RS study search: ``GET /dicom-web/studies`` (PS3.18 section 10.6)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

from aiohttp import web
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from dicom_rules.vault import PATIENT, VaultSealError
from gateway.http.dicom_json import study_attributes
from gateway.http.errors import http_error
from gateway.http.keys import INDEX, SETTINGS, VAULT
from gateway.vault import PseudonymVault, may_reidentify
from storage.index.study_query import DateRange, InvalidQuery, StudyQuery

log = logging.getLogger(__name__)

# Matching keys supported at study level, by keyword.
_MATCHING_KEYS = {
    "PatientID",
    "StudyInstanceUID",
    "AccessionNumber",
    "StudyDate",
    "PatientName",
    "ModalitiesInStudy",
}
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
DICOM_JSON = "application/dicom+json"


def _keyword(name: str) -> str | None:
    """A query parameter names an attribute by keyword or by its tag as 8 hex digits."""
    if tag_for_keyword(name) is not None:
        return name
    if len(name) == 8:
        try:
            return keyword_for_tag(int(name, 16)) or None
        except ValueError:
            return None
    return None


def _int_param(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidQuery(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise InvalidQuery(f"{name} must be between {low} and {high}")
    return value


def parse_study_query(params: web.MultiDictProxy[str]) -> StudyQuery:
    fields: dict[str, object] = {}
    seen: set[str] = set()
    for name in params:
        if name in seen:
            continue
        seen.add(name)
        values = params.getall(name)
        if name in _CONTROL:
            if name != "includefield" and len(values) > 1:
                raise InvalidQuery(f"{name} given more than once")
            raw = values[0]
            if name == "limit":
                fields["limit"] = _int_param("limit", raw, 1, MAX_LIMIT)
            elif name == "offset":
                fields["offset"] = _int_param("offset", raw, 0, 10**9)
            elif name == "fuzzymatching" and raw not in {"true", "false"}:
                raise InvalidQuery("fuzzymatching must be true or false")
            elif name == "includefield":
                for value in values:
                    for item in value.split(","):
                        if item != "all" and _keyword(item.strip()) is None:
                            raise InvalidQuery(f"includefield: unknown attribute {item!r}")
            continue
        keyword = _keyword(name)
        if keyword is None:
            raise InvalidQuery(f"unknown query parameter {name!r}")
        if keyword not in _MATCHING_KEYS:
            raise InvalidQuery(f"{keyword} is not a supported matching key at study level")
        if len(values) > 1:
            raise InvalidQuery(f"{keyword} given more than once")
        value = values[0].strip()
        if not value:
            continue  # universal matching
        if keyword == "PatientID":
            fields["patient_id"] = value
        elif keyword == "StudyInstanceUID":
            fields["study_uids"] = StudyQuery.uid_list(value)
        elif keyword == "AccessionNumber":
            fields["accession_number"] = value
        elif keyword == "StudyDate":
            fields["study_date"] = DateRange.parse(value)
        elif keyword == "PatientName":
            fields["patient_name"] = StudyQuery.name_pattern(value)
        elif keyword == "ModalitiesInStudy":
            fields["modality"] = value
    fields.setdefault("limit", DEFAULT_LIMIT)
    return StudyQuery(**fields)  # type: ignore[arg-type]


def _vault_patients(vault: PseudonymVault, patient_id: str) -> dict[str, dict[str, str]]:
    found = {}
    for pseudonym in vault.patient_pseudonyms(patient_id):
        try:
            original = vault.reveal(PATIENT, pseudonym)
        except VaultSealError as exc:  # sealed under another secret: not this gateway's to open
            log.warning("vault entry of patient %s does not open: %s", pseudonym, exc)
            continue
        if original is not None:
            found[pseudonym] = original
    return found


def _accepts_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return True
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in {DICOM_JSON, "application/json", "application/*", "*/*"}:
            return True
    return False


async def search_studies(request: web.Request) -> web.Response:
    if not _accepts_json(request):
        raise http_error(web.HTTPNotAcceptable, "only application/dicom+json is offered for QIDO-RS")
    try:
        query = parse_study_query(request.query)
    except InvalidQuery as exc:
        raise http_error(web.HTTPBadRequest, str(exc)) from None
    reidentified: dict[str, dict[str, str]] = {}
    vault = request.app[VAULT]
    token = may_reidentify(request.app[SETTINGS], request.headers.get("Authorization"))
    if token and vault is not None and query.patient_id and not set("*?") & set(query.patient_id):
        reidentified = await asyncio.to_thread(_vault_patients, vault, query.patient_id)
        query = dataclasses.replace(query, patient_pseudonyms=tuple(reidentified))
        log.info("re-identifying study query by token %s: %d pseudonymous patient(s)", token[:12], len(reidentified))
    rows, total = await asyncio.to_thread(request.app[INDEX].find_studies, query)
    for row in rows:
        original = reidentified.get(row["patient_id"])
        if original:
            row.update(
                patient_id=original["PatientID"],
                issuer_of_patient_id=original["IssuerOfPatientID"],
                patient_name=original["PatientName"],
                patient_birth_date=original["PatientBirthDate"],
            )
    headers = {"X-Total-Count": str(total)}
    remaining = total - query.offset - len(rows)
    if remaining > 0:
        headers["Warning"] = f'299 pacs-gateway: "There are {remaining} additional results that can be requested"'
    body = json.dumps([study_attributes(row) for row in rows], ensure_ascii=False)
    return web.Response(body=body.encode(), content_type=DICOM_JSON, charset="utf-8", headers=headers)
