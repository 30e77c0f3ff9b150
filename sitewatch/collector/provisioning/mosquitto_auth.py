"""Mosquitto's password file and ACL file: who may log in, and what each login may touch.

The password file holds one ``username:hash`` line per login in mosquitto 2.x's format
(``mosquitto_passwd``'s default): ``$7$<iterations>$<salt>$<hash>``, PBKDF2-HMAC-SHA512 over
a random 12-byte salt, 64-byte output, salt and hash in standard base64. Writing it here
rather than running ``mosquitto_passwd -b`` keeps the password off every command line (where
``ps`` and shell history would show it).

The ACL file is kept as one block per login: a ``user <name>`` line, a ``#`` line saying what
the block is, and its ``topic`` lines. Setting a login's rules replaces its whole block (up to
the next ``user`` line) and leaves every other block, and the lines before the first ``user``
line, as they were. mosquitto applies ``pattern`` lines to every user wherever they stand, so
put any you add by hand before the first ``user`` line.

Rules (topics from ``sitewatch.wire``):

- a device may publish only its own topics, ``sitewatch/v1/<site>/<device>/<kind>`` for
  every kind an agent sends (``sitewatch.wire.DEVICE_KINDS``: telemetry, event, status,
  skip), and read only the collector's confirmations for it,
  ``sitewatch/v1/<site>/ack/<device>``;
- the collector reads and writes everything under ``sitewatch/`` and ``homeassistant/``. It
  reads all devices, and publishes under topics its config can move: dead letters
  (``sitewatch/v1/_collector/...``), alerts (``sitewatch/v1/<site>/alerts/...``), Home
  Assistant state (``sitewatch/state/...``) and discovery (``homeassistant/...``, whose
  ``homeassistant/status`` it also reads). It is the trusted side (it owns the database);
  the ACL is there to hold the devices. Topics moved elsewhere are added as extra topics.

Both files are replaced atomically (a temporary file renamed over the old one) with the old
file's mode, owner and group, so a reloading broker reads either the old or the new file.
A new file gets mode 0640 and, when written by root, the group ``mosquitto``: mosquitto 2.x
reads these files after dropping to its own user.

>>> salt = bytes(range(12))
>>> password_hash("s3cret", salt=salt)[:32]
'$7$101$AAECAwQFBgcICQoL$IpgH3VQ9'
>>> verify_password("s3cret", password_hash("s3cret")), verify_password("x", password_hash("y"))
(True, False)
>>> device_rules("plant-a", "pi-01")[0]
'topic write sitewatch/v1/plant-a/pi-01/telemetry'
"""

from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from sitewatch.wire import DEVICE_KINDS, Kind, topic

__all__ = [
    "DEFAULT_ACL_FILE",
    "DEFAULT_PASSWORD_FILE",
    "PBKDF2_ITERATIONS",
    "AuthFileError",
    "FileChange",
    "acl_blocks",
    "check_username",
    "collector_rules",
    "device_rules",
    "device_username",
    "new_password",
    "password_hash",
    "password_users",
    "replace_file",
    "set_acl_rules",
    "set_password",
    "verify_password",
]

DEFAULT_PASSWORD_FILE = Path("/etc/mosquitto/sitewatch.passwd")
"""Where ``broker/mosquitto-secure.conf`` reads the logins (``password_file``)."""

DEFAULT_ACL_FILE = Path("/etc/mosquitto/sitewatch.acl")
"""Where ``broker/mosquitto-secure.conf`` reads the rules (``acl_file``)."""

PBKDF2_ITERATIONS = 101
"""mosquitto_passwd's own default. Stretching only slows the guessing of weak passwords;
``new_password`` makes 256-bit random ones, which no iteration count makes easier or harder
to guess, while every count costs the broker that many SHA-512 rounds at each connect."""

_SALT_BYTES = 12
_HASH_BYTES = 64
_HASH_RE = re.compile(r"^\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")
_USERNAME_RE = re.compile(r"^[^\s:#][^\s:]*$")
_NEW_FILE_MODE = 0o640


class AuthFileError(ValueError):
    """A username or file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class FileChange:
    """What an update did to a file: ``created`` it, or ``replaced`` an existing entry."""

    path: Path
    created: bool
    replaced: bool

    def describe(self, what: str) -> str:
        """``"<path>: <what> added"`` (or replaced, or the file created)."""
        verb = "replaced" if self.replaced else "added"
        return f"{self.path}: {what} {verb}" + (" (new file)" if self.created else "")


def new_password() -> str:
    """A random password: 32 bytes from the OS's CSPRNG, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)


def password_hash(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """The ``$7$`` hash mosquitto 2.x checks ``password`` against (a fresh salt unless given)."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    return f"$7${iterations}${_b64(salt)}${_b64(_pbkdf2(password, salt, iterations))}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (constant-time comparison)."""
    match = _HASH_RE.match(hashed)
    if match is None:
        return False
    iterations, salt, expected = int(match[1]), base64.b64decode(match[2]), match[3]
    return hmac.compare_digest(_b64(_pbkdf2(password, salt, iterations)), expected)


def check_username(username: str) -> str:
    """``username`` if mosquitto's files can hold it (no ``:``, no white space, not starting
    with ``#``); else ``AuthFileError``."""
    if not _USERNAME_RE.match(username):
        raise AuthFileError(
            f"username {username!r}: must be non-empty, without ':' or white space, "
            "and not start with '#'"
        )
    return username


def device_username(site: str, device: str) -> str:
    """A device's login, ``<site>/<device>``: unique across sites, since neither id may
    contain ``/`` (``sitewatch.wire.Identifier``)."""
    return check_username(f"{site}/{device}")


def device_rules(site: str, device: str) -> list[str]:
    """A device's ACL lines: write its own topics of every kind it sends; read its acks."""
    writes = [f"topic write {topic(site, device, kind)}" for kind in DEVICE_KINDS]
    return [*writes, f"topic read {topic(site, device, Kind.ACK)}"]


def collector_rules(extra_topics: list[str] | None = None) -> list[str]:
    """The collector's ACL lines: read and write everything under ``sitewatch/`` and
    ``homeassistant/``, plus ``extra_topics`` (filters, read and write)."""
    topics = ["sitewatch/#", "homeassistant/#", *(extra_topics or [])]
    for name in topics:
        if not name or any(char.isspace() for char in name):
            raise AuthFileError(f"topic {name!r}: must be non-empty, without white space")
    return [f"topic readwrite {name}" for name in topics]


# -- files ----------------------------------------------------------------------------------


def _new_file_group() -> int | None:
    """The group of a new broker file: ``mosquitto`` when running as root, else our own."""
    if os.geteuid() != 0:
        return None
    try:
        return grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return None


def replace_file(
    path: Path, text: str, *, mode: int, group: int | None = None, keep_existing: bool = True
) -> bool:
    """Write ``text`` to ``path`` atomically; True when the file was new.

    With ``keep_existing`` an existing file keeps its mode, owner and group; otherwise, and
    for a new file, the file gets ``mode`` (exactly, not reduced by the umask) and ``group``
    when given. The temporary file has its final mode before a byte is written, so a secret
    is never readable by others, not even briefly.
    """
    try:
        previous = path.stat()
    except FileNotFoundError:
        previous = None
    created = previous is None
    if not keep_existing:
        previous = None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if previous is not None:
            os.fchmod(fd, stat.S_IMODE(previous.st_mode))
            if (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, previous.st_uid, previous.st_gid)
        else:
            os.fchmod(fd, mode)
            if group is not None:
                os.fchown(fd, -1, group)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return created


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise AuthFileError(f"cannot read {path}: {error}") from None


def password_users(path: Path) -> list[str]:
    """The logins a password file holds, in file order."""
    lines = _read_lines(path)
    return [line.split(":", 1)[0] for line in lines if line and not line.startswith("#")]


def set_password(path: Path, username: str, password: str) -> FileChange:
    """Add ``username`` to a mosquitto password file, or replace its line (other lines stay
    as they were, in order; a second line for the same login is dropped)."""
    check_username(username)
    entry = f"{username}:{password_hash(password)}"
    lines: list[str] = []
    replaced = False
    for line in _read_lines(path):
        if line.split(":", 1)[0] == username and not line.startswith("#"):
            if not replaced:
                lines.append(entry)
            replaced = True
        else:
            lines.append(line)
    if not replaced:
        lines.append(entry)
    created = replace_file(path, "\n".join(lines) + "\n", mode=_NEW_FILE_MODE,
                           group=_new_file_group())
    return FileChange(path, created, replaced)


def _user_of(line: str) -> str | None:
    parts = line.split(None, 1)
    return parts[1].strip() if len(parts) == 2 and parts[0] == "user" else None


def acl_blocks(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split ACL file lines into what precedes the first ``user`` line and each login's
    block (its ``user`` line and everything up to the next one)."""
    preamble: list[str] = []
    blocks: dict[str, list[str]] = {}
    current = preamble
    for line in lines:
        user = _user_of(line)
        if user is not None:
            current = blocks.setdefault(user, [])
        current.append(line)
    return preamble, blocks


def set_acl_rules(path: Path, username: str, rules: list[str], comment: str) -> FileChange:
    """Give ``username`` exactly ``rules`` in a mosquitto ACL file (its block replaced or
    appended; the rest of the file untouched). ``comment`` says whose block it is."""
    check_username(username)
    preamble, blocks = acl_blocks(_read_lines(path))
    replaced = username in blocks
    blocks[username] = [f"user {username}", f"# {comment}", *rules, ""]
    if not preamble:
        preamble = [
            "# sitewatch's mosquitto ACLs: one block per login, kept by",
            "# `sitewatch-collector provision-device` / `provision-collector`.",
            "",
        ]
    lines = list(preamble)
    for block in blocks.values():
        if lines and lines[-1] != "":
            lines.append("")
        lines.extend(block)
    while lines and lines[-1] == "":
        lines.pop()
    created = replace_file(path, "\n".join(lines) + "\n", mode=_NEW_FILE_MODE,
                           group=_new_file_group())
    return FileChange(path, created, replaced)
