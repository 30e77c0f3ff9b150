"""A real SMTP server for tests: aiosmtpd on a free loopback port, plain SMTP without TLS,
keeping every message it is given (the ``smtp`` fixture in conftest.py starts one)."""

from __future__ import annotations

import email
import email.policy
import threading
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["Inbox"]


class Inbox:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.envelopes.append(envelope)
        return "250 OK"

    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        with self._lock:
            envelopes = list(self.envelopes)
        return [
            (
                list(e.rcpt_tos),
                email.message_from_bytes(e.original_content or b"", policy=email.policy.default),
            )
            for e in envelopes
        ]
