"""Source files in an S3 bucket: :class:`S3Storage` implements :class:`pipelines.lib.storage.Storage`.

Loaders never know whether they read a local folder or a bucket; :func:`pipelines.lib.sources.config.storage_for`
returns this class when a source is configured as ``s3://bucket/prefix``.

Configuration is the ordinary boto3 one (``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_PROFILE``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, instance roles, ...). The endpoint can be overridden with
``PULSO_S3_ENDPOINT_URL`` (or the SDK-wide ``AWS_ENDPOINT_URL``) to reach MinIO, LocalStack or a moto server.
Credentials are never logged: messages name only the bucket and key, and botocore's own DEBUG logging
(its signed request headers carry the access key id) is held at INFO unless botocore's logger was set up
explicitly.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipelines.lib.storage import SourceError, read_limited


def _retry_config() -> dict[str, Any]:
    """Retry throttling and transient 5xx the way the AWS SDKs recommend ("standard" mode, bounded attempts).

    The ordinary ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` variables still decide, when set.
    """
    return {
        "mode": os.environ.get("AWS_RETRY_MODE", "standard"),
        "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "5")),
    }


def _quiet_botocore() -> None:
    """Hold botocore's loggers at INFO (their DEBUG records print signed request headers, which carry the
    access key id) unless the operator configured the ``botocore`` logger's level explicitly."""
    logger = logging.getLogger("botocore")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix")`` (prefix without slashes at the ends)."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r}: missing bucket name (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def endpoint_url() -> str | None:
    """The S3 endpoint override from the environment, if any (``PULSO_S3_ENDPOINT_URL`` wins)."""
    return os.environ.get("PULSO_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


class S3Storage:
    """Objects under ``s3://bucket/prefix``; keys given to the methods are relative to the prefix."""

    def __init__(self, bucket: str, prefix: str = "", client: Any | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._stamps: dict[str, str] = {}  # relative key -> "ETag:size" from the last listing

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """Storage for ``s3://bucket/prefix``; the client is created on first use, the boto3 way."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix)

    # -- boto3 ----------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # imported lazily: local-folder runs never need it
            from botocore.config import Config

            _quiet_botocore()

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url(),
                config=Config(retries=_retry_config(), connect_timeout=10, read_timeout=60),
            )
        return self._client

    def _full_key(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix and key else (self.prefix or key)

    def _relative(self, full_key: str) -> str:
        if not self.prefix:
            return full_key
        return full_key[len(self.prefix) + 1 :]

    def _fail(self, key: str, exc: Exception) -> SourceError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "error")
            problem = {
                "NoSuchKey": "no such object",
                "404": "no such object",
                "NoSuchBucket": "no such bucket",
                "AccessDenied": "access denied",
                "403": "access denied",
            }.get(str(code), f"S3 error {code}")
        else:
            # Connection errors name the endpoint, never credentials.
            problem = f"cannot reach S3 ({type(exc).__name__}: {exc})"
        return SourceError(f"{self.describe(key)}: {problem}")

    # -- Storage protocol -----------------------------------------------------------------------------
    def list(self, prefix: str = "") -> list[str]:
        """Keys (relative to this storage's prefix) under ``prefix``, sorted; a folder prefix lists its tree."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._full_key(prefix)
        # An exact object key lists itself (LocalStorage does the same for a file path).
        if prefix and self.exists(prefix):
            return [prefix.lstrip("/")]
        search = f"{full.rstrip('/')}/" if full else ""
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=search):
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):  # console-created "folder" markers are not files
                        keys.append(self._relative(obj["Key"]))
                        self._stamps[keys[-1]] = f"{obj.get('ETag', '')}:{obj.get('Size', '')}"
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(prefix, exc) from exc
        return sorted(keys)

    def read_bytes(self, key: str) -> bytes:
        """The whole object; :class:`SourceError` naming ``s3://bucket/key`` if missing or unreadable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full_key(key))
            # Past PULSO_MAX_FILE_BYTES the object is refused (InputTooLarge) without reading more.
            return read_limited(response["Body"], self.describe(key), response.get("ContentLength"))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, exc) from exc

    def exists(self, key: str) -> bool:
        """Whether the object exists (a missing bucket or denied access is an error, not ``False``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full_key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail(key, exc) from exc

    def fingerprint(self, key: str) -> str:
        """A version stamp of the object (ETag and size, from the last listing, else a HEAD request): a
        loader can tell an unchanged object without downloading it. Raises :class:`SourceError` if missing."""
        key = key.lstrip("/")
        if key in self._stamps:
            return self._stamps[key]
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, exc) from exc
        return f"{head.get('ETag', '')}:{head.get('ContentLength', '')}"

    def describe(self, key: str) -> str:
        """``s3://bucket/prefix/key`` for messages."""
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def write_bytes(self, key: str, data: bytes) -> None:
        """Upload one object (used by tests and by operators seeding a bucket; loaders only read)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._full_key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, exc) from exc

    def __repr__(self) -> str:
        return f"S3Storage('s3://{self.bucket}/{self.prefix}')"
