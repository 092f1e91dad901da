"""The rules stage between the SCP and the spool: filters, quarantine, pixel blanking, vault entries."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless

from dicom_rules.rules import parse_rules
from gateway.statuses import StoreStatus
from gateway.ingest.instance import InstanceRejected, ReceivedInstance
from gateway.ingest.quarantine import Quarantine
from gateway.ingest.rules_stage import Quarantined, RulesStage
from tests.dicom_rules.phi_corpus import part10_bytes, planted_dataset, surviving

SECRET = b"stage-test-secret-0123456789abcdef01234"
RULES = """
[defaults]
mode = "pseudonymised"

[[rule]]
name = "teaching"
calling_ae = "TEACH"
mode = "identified"

[[rule]]
name = "research"
calling_ae = "RESEARCH"
mode = "anonymised"

[[rule]]
name = "ultrasound"
calling_ae = "US1"
mode = "pseudonymised"
[[rule.filter]]
action = "reject"
when = { BurnedInAnnotation = "YES" }
reason = "burned-in annotation"
[[rule.filter]]
action = "quarantine"
when = { Modality = "SC" }
[[rule.blank]]
when = { Modality = "CT" }
regions = [[0, 0, 32, 8], [60, 60, 10, 10]]
"""


@pytest.fixture
def stage(tmp_path: Path) -> RulesStage:
    return RulesStage(parse_rules(RULES), secret=SECRET, quarantine_dir=tmp_path / "quarantine")


def test_identified_instances_pass_unchanged(stage: RulesStage) -> None:
    data = part10_bytes(planted_dataset())
    received = stage.receive(data, source_ae="TEACH")
    assert isinstance(received, ReceivedInstance)
    assert received.data is data and received.vault == ()


def test_pseudonymised_instances_carry_their_vault_entries(stage: RulesStage) -> None:
    received = stage.receive(part10_bytes(planted_dataset()), source_ae="CT1")
    assert isinstance(received, ReceivedInstance)
    assert surviving(bytes(received.data)) == []
    assert [e.kind for e in received.vault] == ["patient", "study", "series", "instance"]
    assert received.record.patient_id.startswith("PGW") and received.record.object_key.startswith("studies/2.25.")
    anonymised = stage.receive(part10_bytes(planted_dataset()), source_ae="RESEARCH")
    assert isinstance(anonymised, ReceivedInstance) and anonymised.vault == ()
    assert anonymised.record.patient_id != received.record.patient_id  # modes do not share pseudonyms


def test_reject_filter_answers_not_authorized(stage: RulesStage) -> None:
    ds = planted_dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(InstanceRejected) as caught:
        stage.receive(part10_bytes(ds), source_ae="US1")
    assert caught.value.status == StoreStatus.NOT_AUTHORIZED
    assert caught.value.reason == "refused by rule 'ultrasound': burned-in annotation"


def test_quarantine_keeps_the_instance_sealed(stage: RulesStage, tmp_path: Path) -> None:
    ds = planted_dataset()
    ds.Modality = "SC"
    data = part10_bytes(ds)
    outcome = stage.receive(data, source_ae="US1")
    assert isinstance(outcome, Quarantined)
    kept = list((tmp_path / "quarantine").iterdir())
    assert len(kept) == 2 and all(surviving(p.read_bytes()) == [] for p in kept)
    quarantine = Quarantine(tmp_path / "quarantine", SECRET)
    [entry] = quarantine.entries()
    assert entry["rule"] == "ultrasound" and entry["sealed"]
    assert quarantine.read(entry["id"]) == data


@pytest.mark.parametrize("compressed", [False, True], ids=["native", "rle"])
def test_blanking_regions_of_native_and_compressed_pixels(stage: RulesStage, compressed: bool) -> None:
    ds = planted_dataset(rows=96, columns=96)
    if compressed:
        ds.compress(RLELossless, generate_instance_uid=False)
    received = stage.receive(part10_bytes(ds), source_ae="US1")
    assert isinstance(received, ReceivedInstance)
    out = dcmread(io.BytesIO(bytes(received.data)))
    pixels = out.pixel_array
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    floor = pixels.min()
    assert (pixels[0:8, 0:32] == floor).all() and (pixels[60:70, 60:70] == floor).all()
    assert not (pixels[40:50, 40:50] == floor).all()  # the rest of the image is left alone
    assert np.array_equal(pixels[20:50, 20:50], planted_dataset(rows=96, columns=96).pixel_array[20:50, 20:50])
    assert "113101" in {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert surviving(bytes(received.data)) == []


def test_a_key_is_required_when_rules_de_identify(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no de-identification secret"):
        RulesStage(parse_rules(RULES), secret=None, quarantine_dir=tmp_path)


@pytest.mark.parametrize("syntax", [DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=lambda s: s.name)
def test_every_uncompressed_transfer_syntax_is_de_identified_and_kept(stage: RulesStage, syntax) -> None:
    ds = planted_dataset(rows=300, columns=300)  # pixel data over 64 KiB: left unread at validation
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, little_endian=syntax != ExplicitVRBigEndian, implicit_vr=syntax == ImplicitVRLittleEndian)
    received = stage.receive(buffer.getvalue(), source_ae="CT1")
    assert isinstance(received, ReceivedInstance)
    out = dcmread(io.BytesIO(bytes(received.data)))
    assert out.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(out.pixel_array, ds.pixel_array)
    values = "\n".join(str(e.value) for e in out.iterall() if not e.VR.startswith("O"))  # values, not deflated bytes
    assert surviving(values.encode()) == []


def test_identified_instances_without_issuer_get_the_default_one_in_the_index_only(tmp_path: Path) -> None:
    stage = RulesStage(parse_rules(RULES), secret=SECRET, quarantine_dir=tmp_path / "q", default_issuer="BV-CHORAY")
    ds = planted_dataset()
    del ds.IssuerOfPatientID
    data = part10_bytes(ds)
    received = stage.receive(data, source_ae="TEACH")
    assert isinstance(received, ReceivedInstance) and received.data == data  # the stored object as received
    assert received.record.issuer_of_patient_id == "BV-CHORAY"
    assert '"00100021":{"vr":"LO","Value":["BV-CHORAY"]}' in received.record.metadata_json
    ds.IssuerOfPatientID = "BV-KHAC"
    assert stage.receive(part10_bytes(ds), source_ae="TEACH").record.issuer_of_patient_id == "BV-KHAC"  # type: ignore[union-attr]
    del ds.IssuerOfPatientID
    pseudonymised = stage.receive(part10_bytes(ds), source_ae="MODALITY")
    assert isinstance(pseudonymised, ReceivedInstance) and pseudonymised.record.issuer_of_patient_id != "BV-CHORAY"
