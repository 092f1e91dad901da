"""A study read whole for publishing: patient and other IDs, series in number order, instances, identity flag."""

from __future__ import annotations

from storage.index.database import IndexDatabase
from storage.index.study_export import read_study
from tests.factory import Patient, ct_series
from tests.storage.conftest import records


def test_read_study_whole(index: IndexDatabase) -> None:
    patient = Patient(patient_id="MRN-EXP", citizen_id="079200000001", insurance_number="HS4010000000001")
    first = ct_series(3, size=16, patient=patient, accession="ACC-EXP")
    study = first[0].StudyInstanceUID
    second = ct_series(2, size=16, patient=patient, study_uid=study, accession="ACC-EXP")
    for ds in second:
        ds.SeriesNumber, ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = 2, "CT", "ABDOMEN", "Bụng"
    index.commit(records(second + first))

    exported = read_study(index.engine, study)
    assert exported is not None and read_study(index.engine, "1.2.999") is None
    assert (exported.accession_number, exported.study_date, exported.study_time) == ("ACC-EXP", "20240315", "101500")
    assert exported.modalities == ("CT",) and exported.number_of_instances == 5 and not exported.identity_removed
    assert (exported.patient.patient_id, exported.patient.issuer) == ("MRN-EXP", "BV-CHORAY")
    assert [(o.value, o.issuer) for o in exported.patient.other_ids] == [("079200000001", "CCCD"), ("HS4010000000001", "BHYT")]
    assert [(s.number, s.body_part, len(s.instances)) for s in exported.series] == [(1, "CHEST", 3), (2, "ABDOMEN", 2)]
    assert [i.number for i in exported.series[0].instances] == [1, 2, 3]
    assert exported.series[0].instances[0].sop_class_uid == first[0].SOPClassUID
