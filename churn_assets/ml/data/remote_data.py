"""The training snapshot fetched from object storage, for runs outside the stack (CI).

A CI runner has no copy of the customer export; the team keeps it in the same S3 store
(MinIO) as the model artifacts, reached with the same credentials and endpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from churn_assets.ml.storage import S3Access


def fetch_s3(uri: str, destination: Path, s3: S3Access) -> int:
    """Download `s3://bucket/key` to `destination` in one rename; returns its size in bytes.

    A failed or interrupted download leaves no partial file at `destination`.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    client = s3.client()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.download")
    try:
        client.download_file(parsed.netloc, parsed.path.lstrip("/"), str(partial))
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination.stat().st_size
