"""Any S3-compatible server (MinIO, SeaweedFS, Ceph RGW, AWS S3) through the minio client."""

from __future__ import annotations

import io

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from storage.object_store.base import ObjectNotFound, ObjectStoreError

_NOT_FOUND = {"NoSuchKey", "NoSuchObject", "NotFound"}


class S3ObjectStore:
    """An S3 bucket. A PUT is atomic on every S3 server, so no partial object is ever visible."""

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
    ) -> None:
        # No client-side retries: the spool worker owns retrying, with backoff,
        # and health checks must notice an unreachable server quickly.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0),
            maxsize=max_connections,
        )
        self.bucket = bucket
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

    def put(self, key: str, data: bytes | bytearray | memoryview, content_type: str = "application/dicom") -> None:
        try:
            try:
                self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                # The server was unreachable at start-up, or the bucket was removed since.
                self.ensure_bucket()
                self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)
        except S3Error as exc:
            raise ObjectStoreError(f"S3 PUT failed: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise ObjectStoreError(f"S3 PUT failed: {type(exc).__name__}") from exc

    def flush(self) -> None:
        """Nothing to do: an S3 PUT is durable once answered."""

    def get(self, key: str) -> bytes:
        return self._read(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._read(key, offset=offset, length=length)

    def _read(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        response = None
        try:
            response = self._client.get_object(self.bucket, key, offset=offset, length=length)
            return response.read()
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise ObjectStoreError(f"S3 GET failed: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"S3 GET failed: {type(exc).__name__}") from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self._client.stat_object(self.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                return False
            raise ObjectStoreError(f"S3 HEAD failed: {exc.code}") from exc
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

    def check(self) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                raise ObjectStoreError(f"bucket {self.bucket!r} does not exist")
        except S3Error as exc:
            raise ObjectStoreError(f"S3 check failed: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreError(f"cannot reach S3 server: {type(exc).__name__}") from exc
