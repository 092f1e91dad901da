"""Any S3-compatible server (MinIO, SeaweedFS, Ceph RGW, AWS S3) through the minio client."""

from __future__ import annotations

import io
import logging
import secrets
import ssl
import threading
import uuid

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from storage.object_store.base import ObjectExists, ObjectInfo, ObjectNotFound, ObjectStoreError, sha256_hex
from storage.object_store.s3_sse import EncryptionRefused, S3Encryption

log = logging.getLogger(__name__)

_NOT_FOUND = {"NoSuchKey", "NoSuchObject", "NotFound"}
_SHA256_META = "x-amz-meta-sha256"
_SINGLE_PUT_LIMIT = 5 * 1024**3  # the largest object one S3 PUT may carry
# What a server that does not implement conditional PUT answers to the header itself.
_HEADER_REFUSED = {"NotImplemented", "InvalidArgument"}
PROBE_PREFIX = ".pacsgw-probe/"  # reserved: random names, no PHI; removed after the probe
# Answers that say nothing about the encryption asked for: the encryption probe runs again later.
# (InternalError is not among them: it is what SeaweedFS answers when SSE-S3 or SSE-KMS is not configured.)
_BUSY = {"SlowDown", "ServiceUnavailable", "RequestTimeout"}
# What a server answers to an SSE-C read with another key, or none, or to a key on an object without SSE-C.
_KEY_REFUSED = {"AccessDenied", "BadRequest", "InvalidArgument", "InvalidRequest"}


class S3ObjectStore:
    """An S3 bucket. A PUT is atomic on every S3 server, so no partial object is ever visible.

    A create-only put sends ``If-None-Match: *`` when the server honours it
    (AWS since 2024, MinIO, SeaweedFS, recent Ceph RGW): of two nodes filing
    the same key, the second gets 412 and nothing is replaced. Whether the
    server honours it is found out once (``probe_conditional_put``: a probe
    key put twice, the second must be refused); a server that ignores the
    header gets a HEAD before the PUT instead, and ``create_only`` is false so
    the caller verifies by checksum (``require_create_only`` refuses such
    writes instead). A probe that meets another error (the server busy or
    unreachable, a missing bucket) decides nothing and runs again at the next
    create-only write. ``put`` returns whether the write went with the
    condition: an object above 5 GiB goes multipart, which cannot carry it,
    so the caller verifies that one too. Each object carries the SHA-256 of
    its bytes as user metadata, so comparing needs a HEAD, not a download.

    ``encryption`` (``S3Encryption``) goes with every write, and under SSE-C
    with every read and HEAD too. Before the first write, ``probe_encryption``
    checks that the server encrypts: a server that refuses it, or stores the
    probe without it, gets no object at all (``EncryptionRefused``).
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = True,
        region: str = "",
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_connections: int = 16,
        conditional_put: bool | None = None,
        require_create_only: bool = False,
        encryption: S3Encryption | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # No client-side retries: the spool worker owns retrying, with backoff,
        # and health checks must notice an unreachable server quickly.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0),
            maxsize=max_connections,
            ssl_context=ssl_context,  # None: urllib3's own (the system's CAs)
        )
        self.bucket = bucket
        # found out by the probe (None until it could run), unless the caller says
        self._conditional: bool | None = conditional_put
        self._probe_lock = threading.Lock()
        self.require_create_only = require_create_only
        self.single_put_limit = _SINGLE_PUT_LIMIT  # larger objects go multipart, without the condition
        self.conformance = "not probed yet" if conditional_put is None else f"set to {conditional_put} by configuration"
        self.encryption = encryption or S3Encryption()
        self._ssec = self.encryption.customer
        self._encrypting = not self.encryption.enabled  # True once the server showed it encrypts
        self.encryption_state = "not asked for" if self._encrypting else "not probed yet"
        self.description = f"s3 bucket {bucket!r} at {endpoint}"
        self._client = Minio(
            endpoint,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region or None,
            http_client=http,
        )

    def ensure_bucket(self) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise ObjectStoreError(f"cannot create bucket: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"cannot reach S3 server: {type(exc).__name__}") from exc

    @property
    def create_only(self) -> bool:
        return bool(self._conditional)

    def creates_atomically(self, size: int) -> bool:
        return self.create_only and size <= self.single_put_limit

    def probe_conditional_put(self) -> bool:
        """Put a probe key twice with ``If-None-Match: *``; conditional PUT works if the second is refused (412).

        Only a server that refuses the header as such (``NotImplemented``,
        ``InvalidArgument``) or lets the second PUT through is taken as not
        honouring it. Any other answer (503, SlowDown, AccessDenied, 409, a
        network error) leaves it undetermined: ObjectStoreError is raised and
        the next create-only write probes again. A missing bucket is created
        first (the server may have been unreachable at start-up).
        """
        key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        placed = False
        try:
            try:
                self._probe_put(key)
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                self.ensure_bucket()
                self._probe_put(key)
            placed = True
            try:
                self._probe_put(key)
                supported, conformance = False, "If-None-Match: * ignored (a second create-only PUT succeeded)"
            except S3Error as exc:
                if exc.code != "PreconditionFailed":
                    raise
                supported, conformance = True, "If-None-Match: * honoured (412 on the second PUT)"
        except S3Error as exc:
            if exc.code not in _HEADER_REFUSED:
                self.conformance = f"undetermined ({exc.code}); probed again at the next create-only write"
                raise ObjectStoreError(f"S3 probe failed: {exc.code}") from exc
            supported, conformance = False, f"If-None-Match: * refused with {exc.code}"
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            self.conformance = f"undetermined ({type(exc).__name__}); probed again at the next create-only write"
            raise ObjectStoreError(f"S3 probe failed: {type(exc).__name__}") from exc
        finally:
            if placed:
                self._remove_probe(key, "conditional PUT probe")
        self._conditional, self.conformance = supported, conformance
        if supported:
            log.info("object store conformance: %s; create-only writes are atomic", self.conformance)
        elif self.require_create_only:
            log.error("object store conformance: %s; storage.require_create_only refuses to file", self.conformance)
        else:
            log.warning(
                "object store conformance: %s; falling back to a check before each write and checksum verification",
                self.conformance,
            )
        return supported

    def _remove_probe(self, key: str, what: str) -> None:
        try:
            self._client.remove_object(self.bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError):
            log.warning("could not remove the %s %s", what, key)

    def _probe_put(self, key: str) -> None:
        self._put_once(key, b"probe", "application/octet-stream", {"If-None-Match": "*"})

    def _ensure_probed(self) -> bool:
        if self._conditional is None:
            with self._probe_lock:
                if self._conditional is None:
                    self.probe_conditional_put()
        return bool(self._conditional)

    def probe_encryption(self) -> None:
        """Write a probe object with the configured encryption and check the server encrypted it.

        The probe's HEAD must show the encryption (under SSE-C: the key's
        MD5), under SSE-C a GET without the key must be refused, and the
        bytes read back must be those written. A refusal of the write (a
        KMS not configured, an SSE-S3 key missing, SSE-C unsupported) or a
        server that ignored the headers raises ``EncryptionRefused``; a
        server busy or unreachable decides nothing (``ObjectStoreError``,
        probed again before the next write).
        """
        if not self.encryption.enabled:
            return
        key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        body = secrets.token_bytes(64)
        what = self.encryption.describe()
        placed = False
        try:
            try:
                self._put_once(key, body, "application/octet-stream", {})
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                self.ensure_bucket()
                self._put_once(key, body, "application/octet-stream", {})
            placed = True
            stat = self._client.stat_object(self.bucket, key, ssec=self._ssec)
            missing = self.encryption.missing_from(stat.metadata or {})
            if missing:
                raise EncryptionRefused(f"{self.description} did not apply {what}: {missing}")
            if self._ssec is not None and self._readable_without_key(key):
                raise EncryptionRefused(f"{self.description} returns an SSE-C object without its key")
            try:
                read = self.fetch(key)[0]
            except ObjectNotFound:
                raise
            except ObjectStoreError as exc:
                raise EncryptionRefused(f"{self.description} cannot read back what it wrote under {what}: {exc}") from exc
            if read != body:
                raise EncryptionRefused(f"{self.description} returned other bytes than written under {what}")
        except S3Error as exc:
            if exc.code in _BUSY or (not placed and exc.code == "AccessDenied"):  # busy, or not our credentials
                self.encryption_state = f"undetermined ({exc.code}); probed again before the next write"
                raise ObjectStoreError(f"S3 encryption probe failed: {exc.code}") from exc
            self.encryption_state = f"refused: {exc.code}"
            raise EncryptionRefused(
                f"{self.description} refused a write with {what} ({exc.code}): is that encryption configured on the "
                "server (SSE-S3 needs its key, SSE-KMS its KMS and key)?"
            ) from exc
        except EncryptionRefused as exc:
            self.encryption_state = f"refused: {exc}"
            raise
        except ObjectNotFound as exc:
            raise ObjectStoreError("S3 encryption probe failed: the probe vanished") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            self.encryption_state = f"undetermined ({type(exc).__name__}); probed again before the next write"
            raise ObjectStoreError(f"S3 encryption probe failed: {type(exc).__name__}") from exc
        finally:
            if placed:
                self._remove_probe(key, "encryption probe")
        self._encrypting, self.encryption_state = True, f"{what} applied by the server (probed)"
        log.info("object store encryption: %s", self.encryption_state)

    def _readable_without_key(self, key: str) -> bool:
        response = None
        try:
            response = self._client.get_object(self.bucket, key)
            response.read()
            return True
        except S3Error:
            return False
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def _ensure_encrypting(self) -> None:
        if not self._encrypting:
            with self._probe_lock:
                if not self._encrypting:
                    self.probe_encryption()

    def _put_once(self, key: str, data: bytes, content_type: str, headers: dict[str, str]) -> None:
        # The client's put_object would turn If-None-Match into user metadata; a single-part PUT takes headers as given.
        sent: dict[str, str | list[str] | tuple[str]] = {
            "Content-Type": content_type, **headers, **self.encryption.write_headers()
        }
        self._client._put_object(self.bucket, key, data, headers=sent)

    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        content_type: str = "application/dicom",
        *,
        sha256: str = "",
        if_absent: bool = False,
    ) -> bool:
        body = data if isinstance(data, bytes) else bytes(data)
        headers = {_SHA256_META: sha256 or sha256_hex(body)}
        try:
            self._ensure_encrypting()
            if if_absent:
                if self._ensure_probed():
                    headers["If-None-Match"] = "*"
                elif self.require_create_only:
                    raise ObjectStoreError(
                        f"storage.require_create_only is set and the S3 server does not honour If-None-Match: * "
                        f"({self.conformance}); instances wait in the spool"
                    )
                elif self.exists(key):
                    raise ObjectExists(key)
            try:
                return self._write(key, body, content_type, headers)
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                # The server was unreachable at start-up, or the bucket was removed since.
                self.ensure_bucket()
                return self._write(key, body, content_type, headers)
        except S3Error as exc:
            if exc.code == "PreconditionFailed" and if_absent:
                raise ObjectExists(key) from None
            raise ObjectStoreError(f"S3 PUT failed: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise ObjectStoreError(f"S3 PUT failed: {type(exc).__name__}") from exc

    def _write(self, key: str, body: bytes, content_type: str, headers: dict[str, str]) -> bool:
        """Write the object; True when the server made it create-only (the condition went with it)."""
        if len(body) <= self.single_put_limit:
            self._put_once(key, body, content_type, headers)
            return "If-None-Match" in headers
        # multipart: no condition possible, the caller verifies by checksum
        metadata = {_SHA256_META: headers[_SHA256_META]}
        self._client.put_object(
            self.bucket, key, io.BytesIO(body), len(body), content_type=content_type, metadata=metadata,  # type: ignore[arg-type]
            sse=self.encryption.sse(),
        )
        return False

    def flush(self) -> set[str]:
        """Nothing to do: an S3 PUT is durable once answered (and a refused one raised at once)."""
        return set()

    def writer(self) -> S3ObjectStore:
        return self  # no batch: each put is answered on its own

    def get(self, key: str, *, version: str = "") -> bytes:
        return self._read(key)

    def get_range(self, key: str, offset: int, length: int, *, version: str = "") -> bytes:
        return self._read(key, offset=offset, length=length)

    def _read(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        return self.fetch(key, offset, length)[0]

    def fetch(self, key: str, offset: int = 0, length: int = 0) -> tuple[bytes, str]:
        """The bytes (``length`` 0: to the end) and the SHA-256 the object carries ('' if written without one)."""
        response = None
        try:
            response = self._client.get_object(self.bucket, key, offset=offset, length=length, ssec=self._ssec)
            return response.read(), response.headers.get(_SHA256_META, "")
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise ObjectStoreError(f"S3 GET failed: {exc.code}{self._key_hint(exc)}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"S3 GET failed: {type(exc).__name__}") from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def info(self, key: str) -> ObjectInfo | None:
        try:
            stat = self._client.stat_object(self.bucket, key, ssec=self._ssec)
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise ObjectStoreError(f"S3 HEAD failed: {exc.code}{self._key_hint(exc)}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"S3 HEAD failed: {type(exc).__name__}") from exc
        digest = (stat.metadata or {}).get(_SHA256_META, "") if stat.metadata is not None else ""
        if not digest:  # written before checksums were kept: read it back
            try:
                digest = sha256_hex(self._read(key))
            except ObjectNotFound:
                return None
        return ObjectInfo(int(stat.size or 0), str(digest))

    def exists(self, key: str) -> bool:
        try:
            self._client.stat_object(self.bucket, key, ssec=self._ssec)
            return True
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                return False
            raise ObjectStoreError(f"S3 HEAD failed: {exc.code}{self._key_hint(exc)}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"S3 HEAD failed: {type(exc).__name__}") from exc

    def delete(self, key: str) -> None:
        try:
            self._client.remove_object(self.bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"S3 DELETE failed: {type(exc).__name__}") from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        try:
            return sorted(
                obj.object_name
                for obj in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
                if obj.object_name is not None
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"S3 LIST failed: {type(exc).__name__}") from exc

    def _key_hint(self, exc: S3Error) -> str:
        if self._ssec is None or exc.code not in _KEY_REFUSED:
            return ""
        return " (the object was written with another SSE-C key, or without SSE-C)"

    def report(self) -> dict[str, object]:
        return {"create_only": self.create_only, "conformance": self.conformance, "encryption": self.encryption_state}

    def check(self) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                raise ObjectStoreError(f"bucket {self.bucket!r} does not exist")
        except S3Error as exc:
            raise ObjectStoreError(f"S3 check failed: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"cannot reach S3 server: {type(exc).__name__}") from exc
