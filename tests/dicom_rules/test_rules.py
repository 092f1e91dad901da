"""The rules file: selection, filters, blanking, and errors reported with their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_rules.engine import Mode, OverrideAction
from dicom_rules.profile import Option, SafePrivate
from dicom_rules.rules import FilterAction, RulesError, load_rules, parse_rules
from tests.dicom_rules.phi_corpus import planted_dataset

RULES = """
[defaults]
mode = "pseudonymised"

[[rule]]
name = "research export"
destination = "research"
mode = "anonymised"
options = ["retain_safe_private", "clean_graphics"]
keep = ["(0019,xx0C:SIEMENS MR HEADER)", "PatientSex"]
remove = ["ManufacturerModelName"]
hash = ["StudyDescription"]
replace = { InstitutionName = "BENH VIEN A" }

[[rule]]
name = "ultrasound room"
calling_ae = ["US*"]
source = ["10.1.0.0/16"]
mode = "pseudonymised"

[[rule.filter]]
action = "reject"
when = { BurnedInAnnotation = "YES" }
reason = "burned-in annotation"

[[rule.filter]]
action = "quarantine"
when = { Modality = "US", ManufacturerModelName = ["LOGIQ E9", "Voluson"] }

[[rule.blank]]
when = { Modality = "US" }
regions = [[0, 0, 640, 40]]

[[rule]]
name = "teaching files"
calling_ae = "TEACH"
mode = "identified"
"""


def test_selection_by_calling_ae_source_and_destination() -> None:
    rules = parse_rules(RULES)
    assert rules.select(calling_ae="US_ROOM2", source="10.1.4.5", destination="archive").name == "ultrasound room"
    assert rules.select(calling_ae="US_ROOM2", source="10.2.4.5", destination="archive").name == "defaults"
    assert rules.select(calling_ae="CT1", source="10.1.4.5", destination="research").name == "research export"
    assert rules.select(calling_ae="TEACH", source="", destination="archive").policy.mode is Mode.IDENTIFIED
    assert rules.select(calling_ae="CT1", source="", destination="archive").policy.mode is Mode.PSEUDONYMISED
    assert rules.needs_key


def test_rule_contents() -> None:
    research = parse_rules(RULES).rules[0]
    policy = research.policy
    assert policy.options == {Option.RETAIN_SAFE_PRIVATE, Option.CLEAN_GRAPHICS}
    assert policy.overrides[0x00100040].action is OverrideAction.KEEP
    assert policy.overrides[0x00081090].action is OverrideAction.REMOVE
    assert policy.overrides[0x00081030].action is OverrideAction.HASH
    assert policy.overrides[0x00080080].value == "BENH VIEN A"
    assert policy.private_overrides[SafePrivate("SIEMENS MR HEADER", 0x0019, 0x0C)].action is OverrideAction.KEEP
    defaults = parse_rules(RULES).default.policy
    assert Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in defaults.options  # the pseudonymised defaults


def test_filters_and_blanking_match_attribute_values() -> None:
    us = parse_rules(RULES).rules[1]
    ds = planted_dataset()
    assert us.first_filter(ds) is None
    ds.BurnedInAnnotation = "YES"
    matched = us.first_filter(ds)
    assert matched is not None and matched.action is FilterAction.REJECT and matched.reason == "burned-in annotation"
    ds.BurnedInAnnotation = "NO"
    ds.Modality, ds.ManufacturerModelName = "US", "voluson"
    matched = us.first_filter(ds)
    assert matched is not None and matched.action is FilterAction.QUARANTINE
    assert us.regions_for(ds) == [(0, 0, 640, 40)]


def test_without_rules_everything_stays_identified() -> None:
    rules = parse_rules("")
    assert rules.select(calling_ae="CT", source="", destination="archive").policy.mode is Mode.IDENTIFIED
    assert not rules.needs_key


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('[[rule]]\nmode = "pseudonymised"\noptions = ["retain_uidz"]\n', 3, "unknown option 'retain_uidz'"),
        ('[[rule]]\nmode = "pseudo"\n', 2, "unknown mode"),
        ('[[rule]]\nname = "a"\nmode = "anonymised"\n\n[[rule]]\nname = "b"\nmode = "anonymised"\nkeep = ["NoSuchKeyword"]\n', 8, "'NoSuchKeyword' is not a DICOM keyword"),
        ('[[rule]]\nmode = "anonymised"\nhash = ["Rows"]\n', 3, "cannot be hashed"),
        ('[[rule]]\nmode = "anonymised"\noptions = ["retain_longitudinal_full_dates", "retain_longitudinal_modified_dates"]\n', 3, "not both"),
        ('[[rule]]\nmode = "identified"\nkeep = ["PatientName"]\n', 3, "apply only"),
        ('[[rule]]\nmode = "anonymised"\ncolour = "blue"\n', 3, "unknown key 'colour'"),
        ('[[rule]]\nmode = "anonymised"\nsource = ["10.0.0.300/8"]\n', 3, "not an IP address"),
        ('[[rule]]\nmode = "anonymised"\n[[rule.filter]]\naction = "drop"\nwhen = { Modality = "US" }\n', 4, "reject' or 'quarantine"),
        ('[[rule]]\nmode = "anonymised"\n[[rule.filter]]\naction = "reject"\nwhen = { Modalty = "US" }\n', 5, "'Modalty' is not a DICOM keyword"),
        ('[[rule]]\nmode = "anonymised"\n[[rule.blank]]\nwhen = { Modality = "US" }\nregions = [[0, 0, 10]]\n', 5, "[x, y, width, height]"),
        ('[[rule]]\nmode = "anonymised"\nkeep = ["(0010,xx10:CREATOR)"]\n', 3, "even group"),
        ('[defaults]\nmode = "anonymised"\nnmae = "x"\n', 3, "unknown key 'nmae'"),
        ('[rules]\nmode = "anonymised"\n', 1, "unknown section"),
        ('[[rule]]\nmode = "anonymised\n', 2, "not valid TOML"),
    ],
)
def test_mistakes_are_reported_with_their_line(text: str, line: int, words: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.toml")
    message = str(caught.value)
    assert message.startswith(f"rules.toml:{line}: "), message
    assert words in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")
    (tmp_path / "latin.toml").write_bytes(b"# \xe9\n")
    with pytest.raises(RulesError, match="UTF-8"):
        load_rules(tmp_path / "latin.toml")
