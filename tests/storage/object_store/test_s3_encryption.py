"""Server-side encryption against a real SeaweedFS: SSE-C and SSE-S3 applied and checked, the rest refused."""

from __future__ import annotations

import secrets
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from minio.error import S3Error

from gateway.settings_sections import S3Settings
from gateway.tls_certs import write_trial_set
from storage.object_store.base import ObjectInfo, ObjectStoreError, sha256_hex
from storage.object_store.cache import CachedObjectStore
from storage.object_store.s3 import PROBE_PREFIX, S3ObjectStore
from storage.object_store.s3_sse import EncryptionRefused, S3Encryption
from tests.peers.seaweedfs import S3Server, run_seaweedfs

KEY = secrets.token_bytes(32)


@pytest.fixture(scope="module")
def s3_server_with_kek(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS with the key SSE-S3 needs (security.toml ``s3.sse.kek`` as its environment variable)."""
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs-kek"), env={"WEED_S3_SSE_KEK": secrets.token_hex(32)}) as s:
        yield s


def _store(server: S3Server, encryption: S3Encryption, bucket: str = "") -> S3ObjectStore:
    store = S3ObjectStore(
        server.endpoint, bucket or f"sse-{uuid.uuid4().hex[:10]}", server.access_key, server.secret_key,
        secure=False, region=server.region, encryption=encryption,
    )
    store.ensure_bucket()
    return store


def _sse_c(key: bytes | None = None) -> S3Encryption:
    return S3Encryption("sse-c", customer_key=key or secrets.token_bytes(32))


def _body(marker: bytes) -> bytes:
    return secrets.token_bytes(3000) + marker * 40 + secrets.token_bytes(3000)


def _on_disk(server: S3Server, marker: bytes) -> bool:
    found = subprocess.run(["grep", "-rlaF", marker.decode(), str(server.workdir / "data")], capture_output=True)
    return found.returncode == 0


def test_sse_c_objects_are_read_back_with_the_key_only(s3_server: S3Server) -> None:
    encryption = _sse_c()
    store = _store(s3_server, encryption)
    store.probe_encryption()
    assert store.report()["encryption"] == "SSE-C applied by the server (probed)"
    key = "studies/1.2/series/1.3/instances/1.4.dcm"
    body = _body(f"SSEC-{uuid.uuid4().hex}".encode())
    store.put(key, body, sha256=sha256_hex(body))

    assert store.get(key) == body
    assert store.get_range(key, 100, 50) == body[100:150]
    assert store.info(key) == ObjectInfo(len(body), sha256_hex(body))
    assert store.exists(key)
    for cached in (CachedObjectStore(store, 1 << 20), CachedObjectStore(store, 1 << 20)):  # its fetch has the key too
        assert cached.get_range(key, 10, 20, version=sha256_hex(body)) == body[10:30]
        assert cached.get(key, version=sha256_hex(body)) == body
        assert cached.misses == 2

    # A plain GET, with the bucket's own credentials, is refused: the bytes need the key.
    with pytest.raises(S3Error):
        s3_server.client().get_object(store.bucket, key)
    # Another key, or none, is a clear error and never other bytes.
    for other in (_sse_c(), S3Encryption()):
        reader = S3ObjectStore(
            s3_server.endpoint, store.bucket, s3_server.access_key, s3_server.secret_key, secure=False,
            region=s3_server.region, encryption=other,
        )
        with pytest.raises(ObjectStoreError, match="S3 GET failed"):
            reader.get(key)
        with pytest.raises(ObjectStoreError, match="S3 GET failed"):
            reader.get_range(key, 0, 10)
        with pytest.raises(ObjectStoreError, match="S3 HEAD failed"):
            reader.info(key)
    with pytest.raises(ObjectStoreError, match="another SSE-C key"):
        S3ObjectStore(
            s3_server.endpoint, store.bucket, s3_server.access_key, s3_server.secret_key, secure=False,
            region=s3_server.region, encryption=_sse_c(),
        ).get(key)
    assert store.list_keys() == [key]  # the probe removed itself


def test_sse_c_is_not_kept_in_clear_on_the_servers_disk(s3_server: S3Server) -> None:
    encrypted, plain = (f"MARK-{uuid.uuid4().hex}".encode() for _ in range(2))
    _store(s3_server, _sse_c()).put("a.dcm", _body(encrypted))
    _store(s3_server, S3Encryption()).put("b.dcm", _body(plain))
    assert _on_disk(s3_server, plain)  # so the search below can find what is there
    assert not _on_disk(s3_server, encrypted)


def test_sse_c_goes_with_every_part_of_a_multipart_upload(s3_server: S3Server) -> None:
    store = _store(s3_server, _sse_c())
    store.single_put_limit = 1024  # what is above goes multipart (5 MiB parts)
    body = secrets.token_bytes(11 * 1024 * 1024)
    assert store.put("big.dcm", body) is False
    assert store.get("big.dcm") == body
    assert store.info("big.dcm") == ObjectInfo(len(body), sha256_hex(body))
    with pytest.raises(S3Error):
        s3_server.client().get_object(store.bucket, "big.dcm")


def test_sse_s3_is_applied_when_the_server_has_its_key(s3_server_with_kek: S3Server) -> None:
    store = _store(s3_server_with_kek, S3Encryption("sse-s3"))
    marker = f"SSES3-{uuid.uuid4().hex}".encode()
    body = _body(marker)
    store.put("c.dcm", body, if_absent=True)
    assert store.report()["encryption"] == "SSE-S3 applied by the server (probed)"
    stat = s3_server_with_kek.client().stat_object(store.bucket, "c.dcm")
    assert stat.metadata["X-Amz-Server-Side-Encryption"] == "AES256"
    assert store.get("c.dcm") == body and store.get_range("c.dcm", 5, 5) == body[5:10]
    assert store.info("c.dcm") == ObjectInfo(len(body), sha256_hex(body))
    assert not _on_disk(s3_server_with_kek, marker)


@pytest.mark.parametrize("encryption", [S3Encryption("sse-s3"), S3Encryption("sse-kms", kms_key_id="pacs")])
def test_encryption_the_server_cannot_apply_stores_nothing(s3_server: S3Server, encryption: S3Encryption) -> None:
    """This SeaweedFS has no SSE-S3 key and no KMS: it refuses such writes, and the gateway files nothing."""
    fresh = _store(s3_server, encryption)  # never probed: its first write probes, and is refused
    with pytest.raises(EncryptionRefused):
        fresh.put("d.dcm", b"must not be stored in clear")
    store = _store(s3_server, encryption, fresh.bucket)
    with pytest.raises(EncryptionRefused, match="refused a write with SSE-"):
        store.probe_encryption()
    assert store.report()["encryption"].startswith("refused")
    with pytest.raises(EncryptionRefused):
        store.put("d.dcm", b"must not be stored in clear")
    assert [k for k in store.list_keys() if not k.startswith(PROBE_PREFIX)] == []


def test_sse_c_over_https_to_a_server_the_ca_file_vouches_for(tmp_path_factory: pytest.TempPathFactory) -> None:
    certs = tmp_path_factory.mktemp("s3-tls")
    ca, server_cert = write_trial_set(certs, ["127.0.0.1", "localhost"])
    tls = (server_cert.cert_file, server_cert.key_file, ca.cert_file)
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs-tls"), tls=tls) as server:
        def store(ca_file: str) -> S3ObjectStore:
            settings = S3Settings(endpoint=server.endpoint, secure=True, ca_file=ca_file)
            return S3ObjectStore(
                server.endpoint, "tls-bucket", server.access_key, server.secret_key, secure=True,
                region=server.region, encryption=_sse_c(KEY), ssl_context=settings.tls_context(),
            )

        with pytest.raises(ObjectStoreError, match="cannot reach S3 server"):  # the system's CAs do not know it
            store("").ensure_bucket()
        trusted = store(str(ca.cert_file))
        trusted.ensure_bucket()
        trusted.probe_encryption()
        body = _body(b"TLS")
        trusted.put("e.dcm", body)
        assert trusted.get("e.dcm") == body and trusted.get_range("e.dcm", 1, 2) == body[1:3]
