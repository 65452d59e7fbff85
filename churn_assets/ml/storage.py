"""Where the platform's files live: a local folder or an S3 prefix, one pyarrow filesystem.

Snapshots (CHURN_SNAPSHOT_URI) and run outputs (CHURN_IO_URI) are folders of the artifact
store: on one machine a local folder, in the deployed stack a prefix in MinIO, so a run in
another container or pod reads what an earlier one wrote.

A file that several writers replace (the snapshots' pointer) is replaced by compare-and-set
on the store itself, so writers agree whatever machine and state folder they run from:
on S3 a conditional PUT (If-Match / If-None-Match, which pyarrow's filesystem cannot send,
so boto3 writes that one object), locally a rename under a file lock (filelock's flock)
beside the file.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import SecretStr

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

#: What S3 answers a conditional write whose condition failed: 412 when the object is not the
#: version named (or exists, for If-None-Match), 409 when another conditional write to it is
#: in progress, 404 when If-Match names an object that is gone.
_CONFLICTS = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"}


class VersionConflictError(RuntimeError):
    """A compare-and-set write refused: the file is not the version it was read as."""


@dataclass(frozen=True)
class Versioned:
    """A small file's bytes and its version, what a compare-and-set write must name."""

    #: None: there is no such file.
    data: bytes | None
    #: The ETag on S3, the SHA-256 of the bytes locally; None when there is no file.
    version: str | None


@dataclass(frozen=True)
class S3Access:
    """How the S3 store (MinIO) is reached: endpoint, credentials and region, for pyarrow's
    filesystem and boto3's client alike. Built from the settings by `stores.s3_access`."""

    endpoint_url: str | None
    access_key: str | None
    secret_key: SecretStr | None
    region: str

    def client(self) -> BaseClient:
        import boto3  # only S3 stores need it

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key.get_secret_value() if self.secret_key else None,
            region_name=self.region,
        )


@dataclass(frozen=True)
class Location:
    filesystem: pafs.FileSystem
    #: The folder inside `filesystem` (bucket/prefix on S3, an absolute path locally).
    root: str
    #: The same folder as a URI: file:///... or s3://bucket/prefix.
    uri: str
    #: How boto3 reaches the same bucket (S3 only): for conditional writes.
    s3: S3Access | None = field(default=None, repr=False, compare=False)

    @property
    def local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def uri_of(self, path: str) -> str:
        """A path of this filesystem as the URI people and metadata show."""
        return path if self.local else f"s3://{path}"

    def exists(self, path: str) -> bool:
        return bool(self.filesystem.get_file_info(path).type != pafs.FileType.NotFound)

    @contextmanager
    def writing(self, path: str) -> Iterator[str]:
        """Where to write `path` so that readers never see half of it: a temporary file beside
        it, moved over it when the block ends, and removed if the block fails.

        Also on S3, where a move is a server-side copy: pyarrow completes an upload when its
        stream closes, even on an exception, so a failed write in place would leave half an
        object under the real name.
        """
        with self.staging(path.rsplit("/", 1)[0]) as staged:
            staged.name = path.rsplit("/", 1)[1]
            yield staged.temporary

    @contextmanager
    def staging(self, folder: str) -> Iterator[Staged]:
        """As `writing`, for a file named only once it is written (by the hash of its bytes):
        the block sets `name`, or leaves it None to drop what it wrote (already stored)."""
        self.filesystem.create_dir(folder, recursive=True)
        staged = Staged(f"{folder}/incoming.{uuid.uuid4().hex}.tmp")
        try:
            yield staged
        except BaseException:
            if self.exists(staged.temporary):
                self.filesystem.delete_file(staged.temporary)
            raise
        if staged.name is None:
            self.filesystem.delete_file(staged.temporary)
        else:
            self.filesystem.move(staged.temporary, f"{folder}/{staged.name}")

    def read_versioned(self, path: str) -> Versioned:
        """A small file's bytes with the version `replace_versioned` compares against."""
        if self.s3 is not None:
            from botocore.exceptions import ClientError

            bucket, key = path.split("/", 1)
            try:
                found = self.s3.client().get_object(Bucket=bucket, Key=key)
            except ClientError as error:
                if _s3_code(error) in {"NoSuchKey", "404"}:
                    return Versioned(None, None)
                raise
            return Versioned(found["Body"].read(), str(found["ETag"]))
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return Versioned(None, None)
        return Versioned(data, hashlib.sha256(data).hexdigest())

    def replace_versioned(self, path: str, data: bytes, version: str | None) -> str:
        """Write `path` whole if it is still at `version` (None: if there is no such file);
        returns the new version, or raises VersionConflictError and writes nothing."""
        if self.s3 is not None:
            from botocore.exceptions import ClientError

            bucket, key = path.split("/", 1)
            condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
            try:
                done = self.s3.client().put_object(Bucket=bucket, Key=key, Body=data, **condition)
            except ClientError as error:
                if _s3_code(error) in _CONFLICTS:
                    raise VersionConflictError(
                        f"{self.uri_of(path)} changed since it was read"
                    ) from None
                raise
            return str(done["ETag"])
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The lock lives beside the file, in the store, so every process that writes this
        # store takes the same one, whatever its own state folder; it is held for a read and
        # a rename, never while a snapshot is written.
        from filelock import FileLock  # training's; the API never replaces the pointer

        # a kernel lock (flock), freed when its holder dies; never filelock's marker file
        with FileLock(target.with_name(f"{target.name}.lock"), fallback_to_soft=False):
            if self.read_versioned(path).version != version:
                raise VersionConflictError(f"{self.uri_of(path)} changed since it was read")
            temporary = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                temporary.write_bytes(data)
                temporary.replace(target)
            finally:
                temporary.unlink(missing_ok=True)
        return hashlib.sha256(data).hexdigest()


def _s3_code(error: ClientError) -> str:
    """The S3 error code of a failed request (for a HEAD-like answer, its HTTP status)."""
    response: Any = error.response
    return str(response.get("Error", {}).get("Code", ""))


@dataclass
class Staged:
    """A file being written under a temporary name; `name` is what it becomes in its folder."""

    temporary: str
    name: str | None = None


def location(uri: str, s3: S3Access) -> Location:
    """A folder path or file:// URI, or s3://bucket/prefix reached with `s3`."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        endpoint = urlparse(s3.endpoint_url or "")
        filesystem = pafs.S3FileSystem(
            access_key=s3.access_key,
            secret_key=s3.secret_key.get_secret_value() if s3.secret_key else None,
            endpoint_override=endpoint.netloc or None,
            scheme=endpoint.scheme or "https",
            region=s3.region,
        )
        root = f"{parsed.netloc}{parsed.path}".rstrip("/")
        return Location(filesystem, root, uri.rstrip("/"), s3)
    path = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().resolve()
    return Location(pafs.LocalFileSystem(), str(path), path.as_uri())


def location_of_file(recorded: str, s3: S3Access) -> tuple[Location, str]:
    """The filesystem and path of one file recorded as a local path or an s3:// URI."""
    if recorded.startswith("s3://"):
        folder, name = recorded.rsplit("/", 1)
        where = location(folder, s3)
        return where, where.path(name)
    return Location(pafs.LocalFileSystem(), "/", "file:///"), recorded
