"""Radiology reports: ``/studies/{study}/report`` (read, save the draft, sign it final) and ``/report-templates``.

Administrators and radiologists read drafts and write; referring physicians
(within their scope) and share links read final reports only: to them a
draft does not exist. The rules, and the delivery of signed reports, are the
reporting service's (``gateway.reporting.service``); this module speaks HTTP.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.http.access import Permission, route
from gateway.http.auth import USER, scope_of
from gateway.http.errors import http_error
from gateway.http.keys import REPORTING
from gateway.reporting.service import NotAWriter, ReportingService
from storage.index.accounts import User
from storage.index.reports import EmptyReport, NoReport, NoSuchStudy, Report, ReportFinal
from storage.uids import is_valid_uid

MAX_TEXT = 20_000  # characters of findings, and of impression
MAX_TEMPLATE = 64


def report_json(report: Report) -> dict[str, Any]:
    final = report.final
    return {
        "study_uid": report.study_uid,
        "status": report.status,
        "template": report.template,
        "findings": report.findings,
        "impression": report.impression,
        "author": report.author_username,
        "author_name": report.author_name,
        "updated_at": report.updated_at.isoformat(),
        "finalized_at": report.finalized_at.isoformat() if final and report.finalized_at else None,
        "finalized_by": report.finalized_by if final else None,
        "finalized_by_name": report.finalized_by_name if final else None,
    }


def _study(request: web.Request) -> str:
    study = request.match_info["study"]
    if not is_valid_uid(study):
        raise http_error(web.HTTPBadRequest, f"{study!r} is not a valid DICOM UID")
    return study


def _writer(request: web.Request) -> User:
    user: User = request[USER]
    try:
        ReportingService.check_writer(user)
    except NotAWriter as exc:
        raise http_error(web.HTTPForbidden, str(exc)) from None
    return user


async def get_report(request: web.Request) -> web.Response:
    study = _study(request)
    report = await request.app[REPORTING].read(study, user=request[USER], scope=scope_of(request))
    if report is None:
        raise http_error(web.HTTPNotFound, "no report")
    return web.json_response(report_json(report))


def _text(body: dict[str, Any], key: str, limit: int, *, required: bool) -> str:
    if key not in body and not required:
        return ""
    value = body.get(key)
    if not isinstance(value, str):
        raise http_error(web.HTTPBadRequest, f"{key} must be a string")
    if len(value) > limit:
        raise http_error(web.HTTPBadRequest, f"{key} is longer than {limit} characters")
    return value


async def put_report(request: web.Request) -> web.Response:
    user = _writer(request)
    study = _study(request)
    try:
        body = await request.json()
    except ValueError:
        raise http_error(web.HTTPBadRequest, "send the report as JSON") from None
    if not isinstance(body, dict):
        raise http_error(web.HTTPBadRequest, 'send {"findings": ..., "impression": ..., "template": ...}')
    findings = _text(body, "findings", MAX_TEXT, required=True)
    impression = _text(body, "impression", MAX_TEXT, required=True)
    template = _text(body, "template", MAX_TEMPLATE, required=False)
    try:
        report = await request.app[REPORTING].save_draft(
            study, author=user, findings=findings, impression=impression, template=template
        )
    except NotAWriter as exc:
        raise http_error(web.HTTPForbidden, str(exc)) from None
    except NoSuchStudy:
        raise http_error(web.HTTPNotFound, "no such study") from None
    except ReportFinal:
        raise http_error(web.HTTPConflict, "the report is final and cannot be changed") from None
    return web.json_response(report_json(report))


async def finalize_report(request: web.Request) -> web.Response:
    user = _writer(request)
    study = _study(request)
    try:
        report = await request.app[REPORTING].sign(study, signer=user)
    except NotAWriter as exc:
        raise http_error(web.HTTPForbidden, str(exc)) from None
    except NoReport:
        raise http_error(web.HTTPNotFound, "no report") from None
    except ReportFinal:
        raise http_error(web.HTTPConflict, "the report is already final") from None
    except EmptyReport as exc:
        raise http_error(web.HTTPBadRequest, str(exc)) from None
    return web.json_response(report_json(report))


async def report_templates(request: web.Request) -> web.Response:
    return web.json_response(await request.app[REPORTING].templates())


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/studies/{study}/report", get_report, permission=Permission.READ_REPORT, audit="read-report")
    route(app, "PUT", "/studies/{study}/report", put_report, permission=Permission.WRITE_REPORT, audit="write-report")
    route(app, "POST", "/studies/{study}/report/final", finalize_report, permission=Permission.WRITE_REPORT, audit="finalize-report")
    route(app, "GET", "/report-templates", report_templates, permission=Permission.REPORT_TEMPLATES)
