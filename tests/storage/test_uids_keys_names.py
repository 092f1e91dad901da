from __future__ import annotations

import pytest

from storage.index.person_names import fold_name, fold_pattern
from storage.keys import instance_key
from storage.uids import InvalidUID, is_valid_uid


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.1", "2.25.0", "0", "1.0.3", "1." + "2" * 62])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid", ["", "1.02", "1..2", "1.2.", ".1", "1.2a", "1.2 ", "1." + "2" * 63, "../1", "1/2", None, 12]
)
def test_invalid_uids(uid) -> None:
    assert not is_valid_uid(uid)


def test_keys_are_built_from_valid_uids_only() -> None:
    assert instance_key("1.2", "1.3", "1.4") == "studies/1.2/series/1.3/instances/1.4.dcm"
    with pytest.raises(InvalidUID):
        instance_key("1.2", "../x", "1.4")


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("Nguyễn^Văn An", "nguyen van an"),
        ("ĐẶNG^THỊ THU", "dang thi thu"),
        ("Trần^Thị^Bình^^", "tran thi binh"),
        ("Wang^XiaoDong=王^小東", "wang xiaodong 王 小東"),
        ("Müller^Jürgen", "muller jurgen"),
    ],
)
def test_fold_name(name: str, folded: str) -> None:
    assert fold_name(name) == folded


def test_fold_pattern_keeps_wildcards() -> None:
    assert fold_pattern("NGUYỄN*") == "nguyen*"
    assert fold_pattern("*văn?an") == "*van?an"
