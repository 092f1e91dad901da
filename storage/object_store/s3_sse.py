"""Server-side encryption of S3 objects: which headers each request carries, and how to tell the server honoured it."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from minio.sse import Sse, SseCustomerKey

from storage.object_store.base import ObjectStoreError

MODES = ("none", "sse-s3", "sse-kms", "sse-c")
_SSE = "X-Amz-Server-Side-Encryption"
_KMS_KEY = "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"
_SSEC_ALGORITHM = "X-Amz-Server-Side-Encryption-Customer-Algorithm"
_SSEC_KEY_MD5 = "X-Amz-Server-Side-Encryption-Customer-Key-MD5"


class EncryptionRefused(ObjectStoreError):
    """The S3 server refused the configured encryption, or stored an object without it: nothing may be filed."""


class _HeaderSse(Sse):
    """SSE-S3 or SSE-KMS as the minio client's multipart upload wants it (a KMS key id may be left to the server)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def headers(self) -> dict[str, str]:
        return dict(self._headers)

    def tls_required(self) -> bool:
        return False


@dataclass(frozen=True)
class S3Encryption:
    """The server-side encryption every object is written with, and read back with (SSE-C).

    ``sse-s3`` and ``sse-kms`` are asked for on each write only: the server
    keeps the key and decrypts on read by itself. ``sse-c`` sends the
    256-bit key (and its MD5, which lets the server check it) on every
    write, read, range read and HEAD; the server keeps only a salted hash
    of it, so an object cannot be read without the key, and a lost key
    loses every object written with it. Under SSE-C the ETag is not the MD5
    of the object; the store never relies on it: its checksum is the
    SHA-256 it keeps as user metadata.
    """

    mode: str = "none"
    kms_key_id: str = ""
    customer_key: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown S3 encryption {self.mode!r}; one of {', '.join(MODES)}")
        if self.mode == "sse-c" and len(self.customer_key) != 32:
            raise ValueError("an SSE-C key is 256 bits (32 bytes)")
        if self.mode != "sse-c" and self.customer_key:
            raise ValueError("a customer key goes with sse-c only")

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def customer(self) -> SseCustomerKey | None:
        """What reads and HEADs carry (SSE-C only)."""
        return SseCustomerKey(self.customer_key) if self.mode == "sse-c" else None

    def write_headers(self) -> dict[str, str]:
        if self.mode == "sse-s3":
            return {_SSE: "AES256"}
        if self.mode == "sse-kms":
            return {_SSE: "aws:kms", **({_KMS_KEY: self.kms_key_id} if self.kms_key_id else {})}
        customer = self.customer
        return customer.headers() if customer is not None else {}

    def sse(self) -> Sse | None:
        """The same for the minio client's multipart upload."""
        if self.mode == "sse-c":
            return self.customer
        return _HeaderSse(self.write_headers()) if self.enabled else None

    def describe(self) -> str:
        if self.mode == "sse-kms":
            return f"SSE-KMS (key {self.kms_key_id})" if self.kms_key_id else "SSE-KMS (the server's default key)"
        return {"none": "none", "sse-s3": "SSE-S3", "sse-c": "SSE-C"}[self.mode]

    def missing_from(self, headers: Mapping[str, str]) -> str:
        """Why the headers of a HEAD do not show this encryption; '' when they do."""
        if self.mode == "none":
            return ""
        if self.mode == "sse-c":
            algorithm = _first(headers.get(_SSEC_ALGORITHM, ""))
            key_md5 = _first(headers.get(_SSEC_KEY_MD5, ""))
            expected = base64.b64encode(hashlib.md5(self.customer_key).digest()).decode()
            if algorithm != "AES256" or key_md5 != expected:
                return "the object's HEAD does not name the SSE-C key it was written with"
            return ""
        wanted = "AES256" if self.mode == "sse-s3" else "aws:kms"
        shown = _first(headers.get(_SSE, ""))
        if shown != wanted:
            return f"the object's HEAD shows server-side encryption {shown or 'none'!r}, not {wanted!r}"
        return ""


def _first(value: str) -> str:
    # Some servers repeat a header; the client joins the copies with commas.
    return value.split(",")[0].strip()


def parse_customer_key(text: str, where: str) -> bytes:
    """A 256-bit key written as base64 (44 characters, as S3 sends it) or as 64 hex digits."""
    text = text.strip()
    key = b""
    if len(text) == 64:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
    if not key:
        try:
            key = base64.b64decode(text, validate=True)
        except ValueError:
            key = b""
    if len(key) != 32:
        raise ValueError(f"{where}: an SSE-C key is 256 bits, written as 44 characters of base64 or 64 hex digits")
    return key
