"""Replacing small state files so that a crash or a power cut leaves the old or the new file,
never half of one: equipment counters on the agent, checkpoints and the status file on the
collector."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, payload: bytes | Iterable[bytes], *, durable: bool = True) -> None:
    """Write ``payload`` to a temporary file beside ``path`` and rename it over ``path``.

    ``payload`` may come in pieces (an iterable of bytes), so that a large checkpoint never
    exists whole in memory. ``durable`` also fsyncs the file and its directory, so the new
    content survives a power cut; leave it off for files rewritten every second that are
    only a view (a status file), to spare the SD card.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        if isinstance(payload, bytes):
            handle.write(payload)
        else:
            for chunk in payload:
                handle.write(chunk)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
