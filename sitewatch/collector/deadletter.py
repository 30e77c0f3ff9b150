"""Dead letters: every message or line the collector cannot store, with the reason.

Each one is appended to ``deadletter.jsonl`` in the state dir (rotated at ``max_bytes``, one
old file kept) and republished on the dead-letter topic so an operator can watch them live.
Recording is thread-safe (the writer thread reports lines InfluxDB rejected); publishing
happens on the MQTT thread, which calls ``publish_pending``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

__all__ = ["DeadLetters"]

_MAX_EXCERPT = 4096
"""Bytes of the offending payload kept in a dead letter."""


class DeadLetters:
    """Dead-letter log and topic. ``count`` is the total recorded since start."""

    def __init__(
        self, path: Path, *, max_bytes: int = 10 << 20, max_unpublished: int = 1000
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.count = 0
        self._lock = threading.Lock()
        self._unpublished: deque[bytes] = deque(maxlen=max_unpublished)
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, source: str, reason: str, content: bytes | str) -> None:
        """Keep one rejected message (``source`` = its topic) or line (``source`` = ``influx``)."""
        raw = content.encode() if isinstance(content, str) else content
        entry = {
            "ts": int(time.time() * 1000),
            "source": source,
            "reason": reason,
            "content": raw[:_MAX_EXCERPT].decode("utf-8", errors="replace"),
            "truncated": len(raw) > _MAX_EXCERPT,
        }
        line = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
        with self._lock:
            self.count += 1
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                self.path.replace(self.path.with_suffix(".jsonl.1"))
            with self.path.open("ab") as log:
                log.write(line)
            self._unpublished.append(line.rstrip(b"\n"))

    def publish_pending(self, publish: Callable[[bytes], None]) -> None:
        """Hand what was recorded since the last call to ``publish`` (MQTT thread)."""
        while True:
            with self._lock:
                if not self._unpublished:
                    return
                payload = self._unpublished.popleft()
            publish(payload)
