"""Instances a rule set aside: kept durably on the gateway's own disk, sealed, for an administrator to review.

They are never stored in the object store or the index. Each is written
(and fsync'd) before the sender is told Success; when the gateway holds a
secret the file is encrypted (AES-GCM) and its name reveals nothing.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicom_rules.pseudonyms import derive
from storage.durable import fsync_dir


class Quarantine:
    def __init__(self, directory: Path, secret: bytes | None) -> None:
        self.directory = directory
        self._aead = AESGCM(derive(secret, "quarantine/encryption")) if secret else None

    def put(self, data: bytes | bytearray | memoryview, *, rule: str, reason: str, calling_ae: str) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        ident = uuid.uuid4().hex
        payload = bytes(data)
        if self._aead is not None:
            nonce = os.urandom(12)
            payload = nonce + self._aead.encrypt(nonce, payload, ident.encode())
        about = {"rule": rule, "reason": reason, "calling_ae": calling_ae, "received_at": time.time(), "sealed": self._aead is not None}
        for name, content in ((f"{ident}.dcm", payload), (f"{ident}.json", json.dumps(about).encode())):
            tmp = self.directory / f".{name}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.directory / name)
        fsync_dir(self.directory)
        return ident

    def entries(self) -> list[dict[str, Any]]:
        if not self.directory.is_dir():
            return []
        found = []
        for about in sorted(self.directory.glob("*.json")):
            entry = json.loads(about.read_text())
            entry["id"] = about.stem
            found.append(entry)
        return found

    def read(self, ident: str) -> bytes:
        if not ident.isalnum():
            raise ValueError("not a quarantine entry id")
        payload = (self.directory / f"{ident}.dcm").read_bytes()
        if json.loads((self.directory / f"{ident}.json").read_text()).get("sealed"):
            if self._aead is None:
                raise ValueError("this quarantine entry is sealed; the gateway secret is needed to read it")
            return self._aead.decrypt(payload[:12], payload[12:], ident.encode())
        return payload
