"""Reading in the viewer: status in the worklist, a report from a template, draft then final, handed to the EMR outbox;
what a referring physician and an auditor see."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from tests.viewer.conftest import PASSWORD, log_in, new_page, open_study


def _status_of(page, accession: str) -> str:
    page.click("#back")
    page.fill("input[name=AccessionNumber]", accession)
    page.select_option("select[name=StudyStatusID]", "")
    page.click("#search button[type=submit]")
    row = page.locator("tr.study", has_text=accession)
    row.wait_for()
    return row.get_attribute("data-status")


def test_report_from_template_to_final(archive, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    log_in(page, gateway.base_url)
    page.locator("#search").wait_for()
    page.select_option("select[name=StudyStatusID]", "UNREAD")
    page.click("#search button[type=submit]")
    expect(page.locator("tr.study", has_text="ACC-2023")).to_have_count(1)  # nothing read yet
    open_study(page, "ACC-2023", loaded=False)
    expect(page.locator("#report-status")).to_have_text("Chưa có kết quả")
    templates = page.locator("#template option")
    assert templates.count() > 2  # CT templates and the generic one
    page.select_option("#template", index=1)
    assert page.locator("#findings").input_value().strip()
    page.fill("#impression", "Không thấy tổn thương khu trú. Nguyễn Văn An")
    page.click("#report-save")
    expect(page.locator("#report-status")).to_contain_text("Bản nháp")
    page.screenshot(path=str(artifacts / "1-draft.png"))
    assert _status_of(page, "ACC-2023") == "IN PROGRESS"

    page.locator("tr.study", has_text="ACC-2023").click()
    expect(page.locator("#impression")).to_have_value("Không thấy tổn thương khu trú. Nguyễn Văn An")  # the draft, kept
    page.click("#report-final")
    page.click("#report-confirm")
    expect(page.locator("#report-status")).to_contain_text("Đã duyệt")
    assert "dr.lan" in page.locator("#report-status").inner_text()
    expect(page.locator("#report-impression")).to_have_text("Không thấy tổn thương khu trú. Nguyễn Văn An")
    assert page.locator("#findings").count() == 0  # a final report is not editable
    page.screenshot(path=str(artifacts / "2-final.png"))
    assert _status_of(page, "ACC-2023") == "READ"

    # Handed to the EMR link: one outbox row, written with the final report.
    from storage.index.schema import outbox

    index = gateway.open_index()
    try:
        with index.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(outbox))]
    finally:
        index.close()
    mine = [r for r in rows if json.loads(r["payload"]).get("accession_number") == "ACC-2023"]
    assert len(mine) == 1 and mine[0]["kind"] == "diagnostic-report" and mine[0]["delivered_at"] is None
    assert json.loads(mine[0]["payload"])["impression"] == "Không thấy tổn thương khu trú. Nguyễn Văn An"


def test_worklist_sorts_by_column_and_pages(archive, page) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    log_in(page, gateway.base_url)
    page.locator("#search").wait_for()
    expect(page.locator("tr.study")).to_have_count(5)
    page.click("button[data-sort=PatientName]")
    expect(page.locator("th[aria-sort=ascending]")).to_have_count(1)
    names = page.locator("tr.study td:nth-child(2)").all_inner_texts()
    page.click("button[data-sort=PatientName]")
    expect(page.locator("th[aria-sort=descending]")).to_have_count(1)
    assert page.locator("tr.study td:nth-child(2)").all_inner_texts() == names[::-1]
    assert names[0] == "<img src" and names[-1] == "Nguyễn Văn An"  # "<" sorts first; Lê before Nguyễn
    page.click("button[data-sort=StudyDate]")
    expect(page.locator("th[aria-sort=ascending] button[data-sort=StudyDate]")).to_have_count(1)
    dates = page.locator("tr.study td:nth-child(5)").all_inner_texts()
    assert [d[-4:] + d[3:5] + d[:2] for d in dates] == sorted(d[-4:] + d[3:5] + d[:2] for d in dates)


def test_referring_physician_reads_only_final_reports(archive, browser, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    gateway.add_user("bs.binh", "referring", password=PASSWORD)
    from storage.index.accounts import AccountStore

    index = gateway.open_index()
    try:
        AccountStore(index.engine).link_patient("bs.binh", "MRN-US")
    finally:
        index.close()
    page = new_page(browser)
    log_in(page, gateway.base_url, "bs.binh")
    page.locator("#search").wait_for()
    expect(page.locator("tr.study")).to_have_count(1)  # only the linked patient's study
    open_study(page, "ACC-US", loaded=False)
    expect(page.locator("#report-status")).to_have_text("Chưa có kết quả")
    assert page.locator("#findings").count() == 0 and page.locator("#share-open").count() == 0
    page.screenshot(path=str(artifacts / "referring.png"))


def test_auditor_sees_the_audit_trail_not_studies(archive, browser) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    gateway.add_user("kiem.tra", "auditor", password=PASSWORD)
    page = new_page(browser)
    log_in(page, gateway.base_url, "kiem.tra")
    expect(page.locator("#audit")).to_be_visible()
    assert page.locator("#search").count() == 0
    assert page.locator("#audit tbody tr").count() > 0
