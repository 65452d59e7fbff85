"""The training snapshot fetched from object storage, for runs outside the stack (CI).

A CI runner has no copy of the customer export; the team keeps it in the same S3 store
(MinIO) as the model artifacts, reached with the same credentials and endpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import boto3

from churn_assets.ml.settings import ChurnSettings


def fetch_s3(uri: str, destination: Path, settings: ChurnSettings) -> int:
    """Download `s3://bucket/key` to `destination` in one rename; returns its size in bytes.

    A failed or interrupted download leaves no partial file at `destination`.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    client = boto3.client(
        "s3",
        endpoint_url=settings.mlflow_s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=(
            settings.aws_secret_access_key.get_secret_value()
            if settings.aws_secret_access_key
            else None
        ),
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.download")
    try:
        client.download_file(parsed.netloc, parsed.path.lstrip("/"), str(partial))
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination.stat().st_size
