"""Where the platform's files live: a local folder or an S3 prefix, one pyarrow filesystem.

Snapshots (CHURN_SNAPSHOT_URI) and run outputs (CHURN_IO_URI) are folders of the artifact
store: on one machine a local folder, in the deployed stack a prefix in MinIO, so a run in
another container or pod reads what an earlier one wrote.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from churn_assets.ml.settings import ChurnSettings


@dataclass(frozen=True)
class Location:
    filesystem: pafs.FileSystem
    #: The folder inside `filesystem` (bucket/prefix on S3, an absolute path locally).
    root: str
    #: The same folder as a URI: file:///... or s3://bucket/prefix.
    uri: str

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


@dataclass
class Staged:
    """A file being written under a temporary name; `name` is what it becomes in its folder."""

    temporary: str
    name: str | None = None


def location(uri: str, settings: ChurnSettings) -> Location:
    """A folder path or file:// URI, or s3://bucket/prefix with the MLflow S3 settings."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        endpoint = urlparse(settings.mlflow_s3_endpoint_url or "")
        secret = settings.aws_secret_access_key
        filesystem = pafs.S3FileSystem(
            access_key=settings.aws_access_key_id,
            secret_key=secret.get_secret_value() if secret else None,
            endpoint_override=endpoint.netloc or None,
            scheme=endpoint.scheme or "https",
            region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        )
        return Location(filesystem, f"{parsed.netloc}{parsed.path}".rstrip("/"), uri.rstrip("/"))
    path = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().resolve()
    return Location(pafs.LocalFileSystem(), str(path), path.as_uri())


def location_of_file(recorded: str, settings: ChurnSettings) -> tuple[Location, str]:
    """The filesystem and path of one file recorded as a local path or an s3:// URI."""
    if recorded.startswith("s3://"):
        folder, name = recorded.rsplit("/", 1)
        where = location(folder, settings)
        return where, where.path(name)
    return Location(pafs.LocalFileSystem(), "/", "file:///"), recorded
