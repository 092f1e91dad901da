"""Between the SCP and the spool: validate, choose the rule, filter, blank, de-identify, seal the vault entries.

All of it happens before the sender is answered, so a rejected instance gets
a failure status, and what the spool holds (and the worker files) is already
what may go to the object store: no PHI when the rule pseudonymises.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_rules.engine import Deidentifier, Mode
from dicom_rules.pixels import BlankingError, blank_regions
from dicom_rules.pseudonyms import PseudonymKey
from dicom_rules.rules import FilterAction, Rule, RuleSet
from dicom_rules.vault import VaultCipher
from gateway.statuses import StoreStatus
from gateway.ingest.encode import encode_instance
from gateway.ingest.instance import (
    InstanceRejected,
    ReceivedInstance,
    instance_record,
    pixel_location,
    validate_instance,
)
from gateway.ingest.quarantine import Quarantine
from storage.index.records import VaultEntry

ARCHIVE = "archive"  # the destination of everything received for storage


@dataclass(frozen=True)
class Quarantined:
    ident: str
    reason: str


class RulesStage:
    def __init__(
        self,
        rules: RuleSet,
        *,
        secret: bytes | None,
        date_shift_max_days: int = 365,
        quarantine_dir: Path | None,
        default_issuer: str = "",
    ) -> None:
        """``quarantine_dir`` None: instances a filter quarantines are reported, not kept (offline use).
        ``default_issuer``: the Issuer of Patient ID the index gives identified instances that have none."""
        if rules.needs_key and not secret:
            raise ValueError("the rules pseudonymise or anonymise, but no de-identification secret is configured")
        self.rules = rules
        self.default_issuer = default_issuer
        self.keys: dict[Mode, PseudonymKey] = {}
        self.cipher: VaultCipher | None = None
        if secret:
            for mode in (Mode.PSEUDONYMISED, Mode.ANONYMISED):
                self.keys[mode] = PseudonymKey(secret, namespace=mode.value, date_shift_max_days=date_shift_max_days)
            self.cipher = VaultCipher(secret)
        self.quarantine = Quarantine(quarantine_dir, secret) if quarantine_dir else None
        self._engines: dict[int, Deidentifier] = {}
        for rule in (*rules.rules, rules.default):
            if rule.policy.mode is not Mode.IDENTIFIED:
                self._engines[id(rule)] = Deidentifier(rule.policy, self.keys[rule.policy.mode])

    def mode_for(self, *, source_ae: str, peer: str = "", destination: str = ARCHIVE) -> Mode:
        return self.rules.mode_for(calling_ae=source_ae, source=peer, destination=destination)

    def receive(
        self,
        data: bytes | bytearray | memoryview,
        *,
        source_ae: str,
        peer: str = "",
        destination: str = ARCHIVE,
        affected_sop_class: str | None = None,
        affected_sop_instance: str | None = None,
    ) -> ReceivedInstance | Quarantined:
        rule = self.rules.select(calling_ae=source_ae, source=peer, destination=destination)
        engine = self._engines.get(id(rule))
        ds = validate_instance(
            data,
            affected_sop_class=affected_sop_class,
            affected_sop_instance=affected_sop_instance,
            decode_values=engine is None,  # values stored as received must decode now; the engine decodes what it keeps
        )
        matched = rule.first_filter(ds)
        if matched is not None:
            reason = f"rule {rule.name!r}: {matched.reason}"
            if matched.action is FilterAction.REJECT:
                raise InstanceRejected(StoreStatus.NOT_AUTHORIZED, f"refused by {reason}")
            ident = ""
            if self.quarantine is not None:
                ident = self.quarantine.put(data, rule=rule.name, reason=matched.reason, calling_ae=source_ae)
            return Quarantined(ident, reason)
        regions = rule.regions_for(ds)
        if engine is None and not regions:
            self._default_issuer(ds)
            record = instance_record(ds, size=len(data), source_ae=source_ae, pixel_offset=pixel_location(ds))
            return ReceivedInstance(record, data)
        if regions:
            ds = self._blanked(data, regions)
            if engine is None:
                self._default_issuer(ds)
        return self._deidentified(ds, data, rule, engine, source_ae, pixels_cleaned=bool(regions))

    def _default_issuer(self, ds: Dataset) -> None:
        """Only in the dataset the index record and metadata are made from; a pseudonym never gets the hospital's issuer."""
        if self.default_issuer and not str(ds.get("IssuerOfPatientID", "") or "").strip() and str(ds.get("PatientID", "") or "").strip():
            ds.IssuerOfPatientID = self.default_issuer

    def _blanked(self, data: bytes | bytearray | memoryview, regions: list[tuple[int, int, int, int]]) -> Dataset:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(bytes(data)))
        try:
            blank_regions(ds, regions)
        except BlankingError as exc:
            raise InstanceRejected(StoreStatus.CANNOT_UNDERSTAND, str(exc), 0x7FE00010) from None
        return ds

    def _deidentified(
        self,
        ds: Dataset,
        data: bytes | bytearray | memoryview,
        rule: Rule,
        engine: Deidentifier | None,
        source_ae: str,
        *,
        pixels_cleaned: bool,
    ) -> ReceivedInstance:
        vault: tuple[VaultEntry, ...] = ()
        if engine is not None:
            identity = engine.apply(ds, pixels_cleaned=pixels_cleaned)
            if rule.policy.mode is Mode.PSEUDONYMISED and self.cipher is not None:
                vault = tuple(
                    self.cipher.entries_for(
                        identity,
                        patient=str(ds.PatientID),
                        study=str(ds.StudyInstanceUID),
                        series=str(ds.SeriesInstanceUID),
                        instance=str(ds.SOPInstanceUID),
                    )
                )
        out, pixel_offset = encode_instance(ds, None if pixels_cleaned else data)
        record = instance_record(ds, size=len(out), source_ae=source_ae, pixel_offset=pixel_offset)
        return ReceivedInstance(record, out, vault)
