"""``AppriseChannel``: notifications to people through apprise URLs (email, Slack, Teams,
Telegram, ntfy, webhooks, …), one send per URL of every recipient.

Each URL gets its own send, so the channel knows which ones failed: a retry goes only to those
(``DeliveryError.retry_with``), and nobody gets the same email twice because a colleague's
Telegram was down. A URL apprise cannot parse is a permanent failure (retrying cannot fix a
typo in the config). Email and webhooks get the full text; chat, push and SMS services get
the short form.

apprise is imported when the channel is built, not when this module is imported. URLs carry
passwords and tokens: errors name a URL by ``redact_url`` only, apprise's own warnings are
scrubbed of the URL's user, password, path and query before they go into an error, and the
``apprise`` logger is held at WARNING (its debug lines print tokens).
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse

from sitewatch.clock import Clock, SystemClock
from sitewatch.collector.alerting.message import MessageText, render
from sitewatch.collector.alerting.model import Contact, Notification
from sitewatch.collector.alerting.notify import DeliveryError, redact_url

__all__ = ["AppriseChannel"]

# Services that get the full plain-text body; every other scheme (chat, push, SMS) gets the
# short form, which is the safe choice for a service we do not know.
FULL_TEXT_SCHEMES = frozenset(
    {
        "mailto", "mailtos", "o365", "azure", "ses", "sendgrid", "mailgun", "sparkpost",
        "resend", "smtp2go", "brevo", "mailersend",
        "json", "jsons", "xml", "xmls", "form", "forms",
    }
)  # fmt: skip


class _Collect(logging.Handler):
    """Keeps apprise's warnings during one send: they say why it failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class AppriseChannel:
    """Sends each notification to every apprise URL of its recipients.

    ``clock`` gives the "now" of the message's relative times ("35 m ago"). ``app_id`` is the
    sender name apprise uses (e.g. the email's From name).
    """

    def __init__(
        self, *, name: str = "apprise", clock: Clock | None = None, app_id: str = "sitewatch"
    ) -> None:
        import apprise  # the collector's dependency, loaded on use (slow to import)

        self.name = name
        self._clock: Clock = clock or SystemClock()
        # apprise's debug lines print service tokens (the Telegram bot URL, webhook paths):
        # keep them out of the collector's log whatever the root level (set the "apprise"
        # logger's level after this to see them while debugging on a bench).
        apprise_log = logging.getLogger("apprise")
        if apprise_log.level < logging.WARNING:
            apprise_log.setLevel(logging.WARNING)
        self._asset = apprise.AppriseAsset(app_id=app_id, app_desc="sitewatch alerts")

    def send(self, notification: Notification) -> None:
        """Send to every URL; DeliveryError naming the URLs that failed (their scheme and
        host), to be retried for those only, or permanent when no retry can help."""
        text = render(notification, now_ms=int(self._clock.time() * 1000))
        retry: list[Contact] = []
        errors: list[str] = []
        retryable = False
        for contact in notification.recipients:
            failed: list[str] = []
            for url in contact.apprise:
                try:
                    self._send_one(url, text, notification)
                except DeliveryError as error:
                    errors.append(f"{contact.name}: {error}")
                    if not error.permanent:
                        failed.append(url)
                        retryable = True
            if failed:
                retry.append(dataclasses.replace(contact, apprise=failed))
        if errors:
            narrowed = dataclasses.replace(notification, recipients=retry)
            raise DeliveryError(
                "; ".join(errors), permanent=not retryable, retry_with=narrowed if retry else None
            )

    def _send_one(self, url: str, text: MessageText, notification: Notification) -> None:
        import apprise  # already loaded by __init__

        where = redact_url(url)
        sender = apprise.Apprise(asset=self._asset)
        if not sender.add(url):
            raise DeliveryError(f"{where}: not a valid apprise URL", permanent=True)
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        body = text.body if scheme in FULL_TEXT_SCHEMES else text.short
        collect = _Collect()
        logger = logging.getLogger("apprise")
        logger.addHandler(collect)
        try:
            ok = sender.notify(
                body=body,
                title=text.subject,
                notify_type=_notify_type(notification),
                body_format="text",
            )
        finally:
            logger.removeHandler(collect)
        if not ok:
            reason = _scrub(" / ".join(collect.lines[-2:]), url) or "apprise reported a failure"
            raise DeliveryError(f"{where}: {reason}")


def _notify_type(notification: Notification) -> str:
    """apprise's notify type (its ``NotifyType`` values), which sets icons and colours."""
    if notification.kind == "resolved":
        return "success"
    if notification.alert.severity == "critical":
        return "failure"
    if notification.alert.severity == "warning":
        return "warning"
    return "info"


def _scrub(text: str, url: str) -> str:
    """``text`` without the parts of ``url`` that may be secret (user, password, host when it
    is a token, path segments, query values), and at most 300 characters.

    >>> _scrub("failed for bot 123456:AAH-secret chat 987654321",
    ...        "tgram://123456:AAH-secret/987654321")
    'failed for bot … chat …'
    """
    parts = urllib.parse.urlsplit(url)
    secrets: set[str] = {parts.netloc.rpartition("@")[2]} if "…" in redact_url(url) else set()
    secrets |= {parts.username or "", parts.password or ""}
    secrets |= {urllib.parse.unquote(p) for p in parts.path.split("/")}
    secrets |= {value for _, value in urllib.parse.parse_qsl(parts.query)}
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "…")
    return text[:300]
