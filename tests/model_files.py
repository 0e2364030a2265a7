"""Model files built member by member, for the tests that feed hostile ones to the loader."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from robot_daemon.model import Model


def npy(array: np.ndarray) -> bytes:
    """``array`` in .npy format (object arrays too: the loader must refuse them)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def members_of(model: Model) -> dict[str, bytes]:
    """The model file's members, name (with .npy) -> bytes."""
    with zipfile.ZipFile(io.BytesIO(model.to_bytes())) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def zipped(parts: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip (an .npz file) of ``parts``, name -> bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return buffer.getvalue()


def with_meta(model: Model, **changes: Any) -> bytes:
    """``model``'s file with its ``meta`` changed, e.g. declaring another d."""
    parts = members_of(model)
    meta = json.loads(str(np.load(io.BytesIO(parts["meta.npy"]))))
    meta.update(changes)
    parts["meta.npy"] = npy(np.array(json.dumps(meta)))
    return zipped(parts)
