"""Fixtures shared by the test modules."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short temporary directory: ipc:// paths are limited to about 107 bytes, and
    pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="rd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
