"""ORU^R01 for a signed report, sent with send_message to a real MLLP listener (python-hl7's asyncio server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import hl7
import pytest
from hl7.mllp import start_hl7_server

from gateway.emr.hl7.oru import build_oru_r01
from gateway.emr.hl7.sender import Hl7DeliveryError, send_message
from storage.index.database import IndexDatabase
from storage.index.outbox import DIAGNOSTIC_REPORT, Outbox
from storage.index.reports import ReportStore
from tests.factory import ct_series
from tests.peers.ports import free_port
from tests.storage.conftest import records

FINDINGS = "Phổi hai bên sáng.\nKhông thấy tràn dịch | tràn khí ^ & ~ \\ màng phổi."
IMPRESSION = "Không thấy bất thường trên CT ngực."


@pytest.fixture
def payload(tmp_path: Path) -> dict:
    """The payload of a real outbox row: a study indexed, its report written and signed."""
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        series = ct_series(1, size=16, accession="ACC-ORU")
        index.commit(records(series))
        reports = ReportStore(index.engine)
        study = str(series[0].StudyInstanceUID)
        reports.save_draft(study, findings=FINDINGS, impression=IMPRESSION, template="ct", username="dr1", display_name="BS. Trần Thị Bình")
        reports.finalize(study, username="dr1", display_name="BS. Trần Thị Bình")
        [item] = Outbox(index.engine).due(DIAGNOSTIC_REPORT)
        return item.payload
    finally:
        index.close()


Answer = Callable[[hl7.Message], str | None]  # the ACK to send back, or None for silence


@asynccontextmanager
async def emr_listener(answer: Answer) -> AsyncIterator[tuple[int, list[hl7.Message]]]:
    """An EMR's MLLP listener: keeps what it receives, answers as told."""
    received: list[hl7.Message] = []

    async def serve(reader, writer) -> None:
        try:
            while True:
                message = await reader.readmessage()
                received.append(message)
                reply = answer(message)
                if reply is not None:
                    writer.writeblock(reply.encode("utf-8"))
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    port = free_port()
    server = await start_hl7_server(serve, "127.0.0.1", port, encoding="utf-8")
    try:
        yield port, received
    finally:
        server.close()
        await server.wait_closed()


def accept(message: hl7.Message) -> str:
    return str(message.create_ack("AA", application="EMR", facility="BV"))


def refuse(message: hl7.Message) -> str:
    ack = str(message.create_ack("AE", application="EMR", facility="BV"))
    return ack + "ERR||PID^1^3|204^Unknown key identifier^HL70357|E||||Không tìm thấy bệnh nhân NGUYEN VAN AN\r"


def test_a_signed_report_is_delivered_as_oru_r01(payload: dict) -> None:
    current = {**payload, "patient_name": "Nguyễn^Văn An^^BS.^", "placer_order_number": "PL-9", "filler_order_number": ""}
    message = build_oru_r01(current, application="PACSGW", facility="RADIOLOGY", control_id="PGW42")

    async def run() -> tuple[str, list[hl7.Message]]:
        async with emr_listener(accept) as (port, received):
            return await send_message("127.0.0.1", port, message, 5.0), received

    ack, received = asyncio.run(run())
    assert str(hl7.parse(ack).segment("MSA")(1)) == "AA"
    [oru] = received
    assert str(oru.segment("MSH")(9)) == "ORU^R01^ORU_R01" and str(oru.segment("MSH")(10)) == "PGW42"
    assert str(oru.segment("PID")(3)) == "MRN-0001^^^BV-CHORAY^MR" and str(oru.segment("PID")(5)) == "Nguyễn^Văn An^^^BS."
    obr, orc = oru.segment("OBR"), oru.segment("ORC")
    assert (str(obr(2)), str(obr(3)), str(obr(18)), str(obr(24)), str(obr(25))) == ("PL-9", "ACC-ORU", "ACC-ORU", "CT", "F")
    assert (str(orc(1)), str(orc(2)), str(orc(3))) == ("RE", "PL-9", "ACC-ORU")
    assert "BS. Trần Thị Bình" in str(obr(32))
    findings, impression = oru.segments("OBX")
    assert str(impression(3)(1)(1)) == "19005-8" and str(impression(11)) == "F"
    assert oru.unescape(str(impression(5))) == IMPRESSION
    assert oru.unescape(str(findings(5))).replace("\r", "\n") == FINDINGS


def test_a_refusal_raises_without_the_peers_text(payload: dict) -> None:
    message = build_oru_r01(payload, application="PACSGW", facility="RADIOLOGY", control_id="PGW43")

    async def run() -> None:
        async with emr_listener(refuse) as (port, _):
            await send_message("127.0.0.1", port, message, 5.0)

    with pytest.raises(Hl7DeliveryError) as refused:
        asyncio.run(run())
    assert "AE" in refused.value.reason and "204" in refused.value.reason and "PID^1^3" in refused.value.reason
    assert "NGUYEN" not in refused.value.reason and not refused.value.unavailable  # the EMR answers: not paused


def test_silence_wrong_answers_and_no_listener_raise(payload: dict) -> None:
    message = build_oru_r01(payload, application="PACSGW", facility="RADIOLOGY", control_id="PGW44")

    def other_message(received: hl7.Message) -> str:
        return accept(received).replace("|PGW44", "|PGW99")

    async def attempt(answer: Answer, timeout: float) -> tuple[str, bool]:
        async with emr_listener(answer) as (port, _):
            try:
                await send_message("127.0.0.1", port, message, timeout)
            except Hl7DeliveryError as exc:
                return exc.reason, exc.unavailable
        return "delivered", False

    reason, unavailable = asyncio.run(attempt(lambda _m: None, 0.3))
    assert "no ACK" in reason and unavailable  # the outbox pauses the destination
    assert asyncio.run(attempt(other_message, 5.0)) == ("the answer (AA) acknowledges another message", False)
    with pytest.raises(Hl7DeliveryError, match="connection") as down:
        asyncio.run(send_message("127.0.0.1", free_port(), message, 5.0))
    assert down.value.unavailable
