"""Content hashes and atomic replacement of files (churn_assets.ml.files)."""

import hashlib
import io
import os
from pathlib import Path

import pytest

from churn_assets.ml.files import file_sha256, replacing, stream_sha256


def test_file_hash_is_sha256_of_every_byte(tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)  # spans several read chunks
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    assert file_sha256(path) == hashlib.sha256(content).hexdigest()


def test_stream_hash_reads_what_is_left_in_blocks_of_any_size() -> None:
    content = os.urandom(10_007)
    handle = io.BytesIO(content)
    handle.read(7)
    assert stream_sha256(handle, chunk=1000) == hashlib.sha256(content[7:]).hexdigest()


def test_a_failed_replacement_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="half"), replacing(path) as temporary:
        temporary.write_text("new, half written")
        raise RuntimeError("half")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
    with replacing(path) as temporary:
        temporary.write_text("new")
    assert path.read_text() == "new"
    assert list(tmp_path.iterdir()) == [path]
