"""The rules file: which de-identification applies to an instance, chosen by where it comes from and goes to.

A TOML document with optional ``[defaults]`` and an ordered list of
``[[rule]]`` tables; the first rule whose ``calling_ae``, ``source`` and
``destination`` all match is used, else the defaults. A rule gives a mode,
profile options, per-attribute overrides (``keep``, ``remove``, ``hash``
lists and a ``replace`` table), ``[[rule.filter]]`` entries that reject or
quarantine instances, and ``[[rule.blank]]`` entries that blank pixel
regions. The README documents the format; every mistake is reported with
its line.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from dicom_rules.engine import Mode, Override, OverrideAction, Policy
from dicom_rules.profile import Option, SafePrivate

DEFAULT_OPTIONS = {
    Mode.IDENTIFIED: frozenset(),
    Mode.PSEUDONYMISED: frozenset(
        {
            Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            Option.RETAIN_PATIENT_CHARACTERISTICS,
            Option.CLEAN_DESCRIPTORS,
        }
    ),
    Mode.ANONYMISED: frozenset(),
}
_RULE_KEYS = {"name", "calling_ae", "source", "destination", "mode", "options", "keep", "remove", "hash", "replace", "filter", "blank"}
_DEFAULT_KEYS = {"mode", "options", "keep", "remove", "hash", "replace", "filter", "blank"}
_HASHABLE_VRS = {"LO", "SH", "PN", "LT", "ST", "UT", "UC", "AE", "CS", "UI"}
_PRIVATE_TAG = re.compile(r"\(\s*([0-9A-Fa-f]{4})\s*,\s*[xX]{2}([0-9A-Fa-f]{2})\s*:\s*([^)]+?)\s*\)")
_TAG = re.compile(r"\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?")


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the line and the reason."""


class FilterAction(str, Enum):
    REJECT = "reject"
    QUARANTINE = "quarantine"


@dataclass(frozen=True)
class Condition:
    """Attribute values an instance must all have (each may be one of several), compared without case."""

    values: dict[str, frozenset[str]]

    def matches(self, ds: Dataset) -> bool:
        for keyword, accepted in self.values.items():
            value = ds.get(keyword)
            if value is None:
                return False
            items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
            if not any(str(v).strip().upper() in accepted for v in items):
                return False
        return True

    def describe(self) -> str:
        return ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in self.values.items())


@dataclass(frozen=True)
class Filter:
    action: FilterAction
    when: Condition
    reason: str


@dataclass(frozen=True)
class Blanking:
    when: Condition
    regions: tuple[tuple[int, int, int, int], ...]  # x, y, width, height in pixels


@dataclass(frozen=True)
class Rule:
    name: str
    policy: Policy
    calling_ae: tuple[str, ...] = ()
    source: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    destination: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    blanking: tuple[Blanking, ...] = ()

    def matches(self, calling_ae: str, source: str, destination: str) -> bool:
        if self.calling_ae and not any(fnmatch.fnmatchcase(calling_ae.upper(), p.upper()) for p in self.calling_ae):
            return False
        if self.source:
            try:
                address = ipaddress.ip_address(source)
            except ValueError:
                return False
            if not any(address in network for network in self.source):
                return False
        return not self.destination or destination in self.destination

    def first_filter(self, ds: Dataset) -> Filter | None:
        return next((f for f in self.filters if f.when.matches(ds)), None)

    def regions_for(self, ds: Dataset) -> list[tuple[int, int, int, int]]:
        return [region for blank in self.blanking if blank.when.matches(ds) for region in blank.regions]


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    default: Rule = field(default_factory=lambda: Rule("defaults", Policy(Mode.IDENTIFIED)))

    def select(self, *, calling_ae: str, source: str, destination: str) -> Rule:
        return next((r for r in self.rules if r.matches(calling_ae, source, destination)), self.default)

    def mode_for(self, *, calling_ae: str, source: str = "", destination: str) -> Mode:
        return self.select(calling_ae=calling_ae, source=source, destination=destination).policy.mode

    @property
    def needs_key(self) -> bool:
        return any(r.policy.mode is not Mode.IDENTIFIED for r in (*self.rules, self.default))


class _Locator:
    """Finds the line of a key or value inside the n-th ``[[rule]]`` (or ``[defaults]``) of the raw text."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.rule_starts = [i for i, line in enumerate(self.lines) if re.match(r"\s*\[\[\s*rule\s*\]\]", line)]
        self.defaults_start = next((i for i, line in enumerate(self.lines) if re.match(r"\s*\[\s*defaults\s*\]", line)), 0)

    def _range(self, rule_index: int | None) -> range:
        if rule_index is None:
            start = self.defaults_start
            following = [s for s in self.rule_starts if s > start]
            return range(start, following[0] if following else len(self.lines))
        start = self.rule_starts[rule_index] if rule_index < len(self.rule_starts) else 0
        end = self.rule_starts[rule_index + 1] if rule_index + 1 < len(self.rule_starts) else len(self.lines)
        return range(start, end)

    def line(self, rule_index: int | None, needle: str | None = None) -> int:
        span = self._range(rule_index)
        if needle:
            for i in span:
                if needle in self.lines[i]:
                    return i + 1
        return span.start + 1


class _Parser:
    def __init__(self, text: str, origin: str) -> None:
        self.origin = origin
        self.locator = _Locator(text)
        try:
            self.document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"\(at line (\d+)", str(exc))
            line = match.group(1) if match else str(max(1, len(text.splitlines())))
            raise RulesError(f"{origin}:{line}: not valid TOML: {exc}") from None
        self.rule_index: int | None = None

    def fail(self, reason: str, needle: str | None = None) -> RulesError:
        line = self.locator.line(self.rule_index, needle)
        return RulesError(f"{self.origin}:{line}: {reason}")

    def parse(self) -> RuleSet:
        unknown = set(self.document) - {"defaults", "rule"}
        if unknown:
            key = min(unknown)
            raise RulesError(f"{self.origin}:{self._top_line(key)}: unknown section or key {key!r} (expected [defaults] or [[rule]])")
        default = Rule("defaults", Policy(Mode.IDENTIFIED))
        if "defaults" in self.document:
            self.rule_index = None
            default = self._rule(self.document["defaults"], "defaults", _DEFAULT_KEYS)
        rules = []
        raw_rules = self.document.get("rule", [])
        if not isinstance(raw_rules, list):
            raise RulesError(f"{self.origin}:1: 'rule' must be an array of tables ([[rule]])")
        for i, raw in enumerate(raw_rules):
            self.rule_index = i
            rules.append(self._rule(raw, raw.get("name") or f"rule {i + 1}", _RULE_KEYS))
        return RuleSet(tuple(rules), default)

    def _top_line(self, key: str) -> int:
        for i, line in enumerate(self.locator.lines):
            if re.match(rf"\s*\[?\s*{re.escape(key)}\b", line):
                return i + 1
        return 1

    def _rule(self, raw: Mapping[str, Any], name: str, allowed: set[str]) -> Rule:
        for key in raw:
            if key not in allowed:
                raise self.fail(f"{name}: unknown key {key!r} (known: {', '.join(sorted(allowed))})", key)
        mode_text = raw.get("mode", "identified")
        try:
            mode = Mode(mode_text)
        except ValueError:
            raise self.fail(f"{name}: unknown mode {mode_text!r} (identified, pseudonymised or anonymised)", "mode") from None
        options = self._options(raw, name, mode)
        overrides, private_overrides = self._overrides(raw, name, mode)
        policy = Policy(mode, options, overrides, private_overrides)
        return Rule(
            name=str(name),
            policy=policy,
            calling_ae=tuple(self._strings(raw, "calling_ae", name)),
            source=tuple(self._networks(raw, name)),
            destination=tuple(self._strings(raw, "destination", name)),
            filters=tuple(self._filters(raw.get("filter", []), name)),
            blanking=tuple(self._blanking(raw.get("blank", []), name)),
        )

    def _strings(self, raw: Mapping[str, Any], key: str, name: str) -> list[str]:
        value = raw.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{name}: {key} must be a string or a list of non-empty strings", key)
        return value

    def _networks(self, raw: Mapping[str, Any], name: str) -> list[Any]:
        networks = []
        for entry in self._strings(raw, "source", name):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise self.fail(f"{name}: source {entry!r} is not an IP address or network", entry) from None
        return networks

    def _options(self, raw: Mapping[str, Any], name: str, mode: Mode) -> frozenset[Option]:
        if "options" not in raw:
            return DEFAULT_OPTIONS[mode]
        chosen = set()
        for text in self._strings(raw, "options", name):
            try:
                chosen.add(Option(text))
            except ValueError:
                known = ", ".join(o.value for o in Option)
                raise self.fail(f"{name}: unknown option {text!r} (known: {known})", text) from None
        if mode is Mode.IDENTIFIED and chosen:
            raise self.fail(f"{name}: options apply only to the pseudonymised and anonymised modes", "options")
        if {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES} <= chosen:
            raise self.fail(f"{name}: choose full dates or modified dates, not both", "options")
        return frozenset(chosen)

    def _tag(self, text: str, name: str) -> int | SafePrivate:
        private = _PRIVATE_TAG.fullmatch(text.strip())
        if private:
            group = int(private.group(1), 16)
            if not group & 1:
                raise self.fail(f"{name}: {text!r} names a private element in an even group", text)
            return SafePrivate(private.group(3), group, int(private.group(2), 16))
        tag = tag_for_keyword(text.strip())
        if tag is None:
            plain = _TAG.fullmatch(text.strip())
            if not plain:
                raise self.fail(f"{name}: {text!r} is not a DICOM keyword, (gggg,eeee) or (gggg,xxee:CREATOR)", text)
            tag = int(plain.group(1) + plain.group(2), 16)
        return tag

    def _overrides(self, raw: Mapping[str, Any], name: str, mode: Mode) -> tuple[dict[int, Override], dict[SafePrivate, Override]]:
        standard: dict[int, Override] = {}
        private: dict[SafePrivate, Override] = {}
        entries: list[tuple[str, Override]] = []
        for action in (OverrideAction.KEEP, OverrideAction.REMOVE, OverrideAction.HASH):
            entries += [(text, Override(action)) for text in self._strings(raw, action.value, name)]
        replace = raw.get("replace", {})
        if not isinstance(replace, dict):
            raise self.fail(f"{name}: replace must be a table of attribute = value", "replace")
        for text, value in replace.items():
            if not isinstance(value, str):
                raise self.fail(f"{name}: replace.{text} must be a string", text)
            entries.append((text, Override(OverrideAction.REPLACE, value)))
        if entries and mode is Mode.IDENTIFIED:
            raise self.fail(f"{name}: keep/remove/hash/replace apply only to the pseudonymised and anonymised modes", entries[0][0])
        for text, override in entries:
            tag = self._tag(text, name)
            if isinstance(tag, SafePrivate):
                if override.action not in (OverrideAction.KEEP, OverrideAction.REMOVE):
                    raise self.fail(f"{name}: private elements can only be kept or removed ({text!r})", text)
                private[tag] = override
                continue
            if tag in standard:
                raise self.fail(f"{name}: {text!r} has more than one override", text)
            self._check_override(tag, override, text, name)
            standard[tag] = override
        return standard, private

    def _check_override(self, tag: int, override: Override, text: str, name: str) -> None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        if override.action is OverrideAction.HASH and vr not in _HASHABLE_VRS:
            raise self.fail(f"{name}: {text!r} (VR {vr}) cannot be hashed; only text, names and UIDs can", text)
        if override.action is OverrideAction.REPLACE:
            if vr in ("SQ", "UN") or vr.startswith("O"):
                raise self.fail(f"{name}: {text!r} (VR {vr}) cannot be replaced by text", text)
            if len(override.value or "") > 64 and vr in ("LO", "PN", "SH", "CS", "AE", "UI", "DA", "TM", "DT"):
                raise self.fail(f"{name}: replacement for {text!r} is too long for VR {vr}", text)

    def _condition(self, raw: Any, name: str, what: str) -> Condition:
        if not isinstance(raw, dict) or not raw:
            raise self.fail(f"{name}: {what} needs a non-empty 'when' table of attribute = value(s)", "when")
        values: dict[str, frozenset[str]] = {}
        for keyword, accepted in raw.items():
            if tag_for_keyword(keyword) is None:
                raise self.fail(f"{name}: {what}: {keyword!r} is not a DICOM keyword", keyword)
            items = [accepted] if isinstance(accepted, (str, int)) else accepted
            if not isinstance(items, list) or not items:
                raise self.fail(f"{name}: {what}: {keyword} must be a value or a list of values", keyword)
            values[keyword] = frozenset(str(v).strip().upper() for v in items)
        return Condition(values)

    def _filters(self, raw: Any, name: str) -> list[Filter]:
        if not isinstance(raw, list):
            raise self.fail(f"{name}: filter must be written as [[rule.filter]] tables", "filter")
        filters = []
        for entry in raw:
            unknown = set(entry) - {"action", "when", "reason"}
            if unknown:
                raise self.fail(f"{name}: filter: unknown key {min(unknown)!r}", min(unknown))
            try:
                action = FilterAction(entry.get("action", ""))
            except ValueError:
                raise self.fail(f"{name}: filter action must be 'reject' or 'quarantine'", "action") from None
            when = self._condition(entry.get("when"), name, "filter")
            reason = str(entry.get("reason") or f"matches {when.describe()}")
            filters.append(Filter(action, when, reason))
        return filters

    def _blanking(self, raw: Any, name: str) -> list[Blanking]:
        if not isinstance(raw, list):
            raise self.fail(f"{name}: blank must be written as [[rule.blank]] tables", "blank")
        result = []
        for entry in raw:
            unknown = set(entry) - {"when", "regions"}
            if unknown:
                raise self.fail(f"{name}: blank: unknown key {min(unknown)!r}", min(unknown))
            when = self._condition(entry.get("when"), name, "blank")
            regions = entry.get("regions")
            valid = isinstance(regions, list) and regions and all(
                isinstance(r, list) and len(r) == 4 and all(isinstance(v, int) and v >= 0 for v in r) and r[2] > 0 and r[3] > 0
                for r in regions
            )
            if not valid:
                raise self.fail(f"{name}: blank regions must be a list of [x, y, width, height] in pixels", "regions")
            result.append(Blanking(when, tuple(tuple(r) for r in regions)))
        return result


def parse_rules(text: str, origin: str = "<rules>") -> RuleSet:
    return _Parser(text, origin).parse()


def load_rules(path: str | Path) -> RuleSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise RulesError(f"{path}: the rules file is not UTF-8 text") from None
    return parse_rules(text, str(path))
