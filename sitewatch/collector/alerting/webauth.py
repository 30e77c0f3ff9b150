"""Who may use the collector's web page: password hashes, the users file, the API token,
login sessions and a brake on password guessing.

Passwords are stored as scrypt hashes (``hashlib.scrypt``, a random 16-byte salt, cost
n=2**14, r=8, p=1: about 16 MiB and some tens of milliseconds per check, cheap for one
login and expensive for a guesser), one ``name:scrypt$n$r$p$salt$hash`` line per person in
the users file (``#`` comments and blank lines allowed). ``users_file_line`` makes such a
line and ``set_password`` adds or replaces one in a file (for a ``sitewatch-collector``
command). Every comparison of secrets is constant-time, and an unknown name costs as much
as a wrong password, so timing tells nothing about who exists.

Sessions live in memory only (a restarted collector asks people to log in again): a random
cookie value (looked up by its SHA-256, so lookups leak nothing about it) with a CSRF token
of its own, ending ``ttl_s`` after login on the monotonic clock.

>>> line = users_file_line("ana", "correct horse")
>>> line.startswith("ana:scrypt$16384$8$1$")
True
>>> users, problems = parse_users(line + "\\n# a comment\\n")
>>> verify_password("correct horse", users["ana"]), verify_password("wrong", users["ana"])
(True, False)
>>> users_file_problems("ana:plaintext\\nbo\\n")
['line 1: the hash is not a scrypt$… hash from users_file_line', 'line 2: expected name:hash']
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from sitewatch.atomicfile import write_atomic
from sitewatch.clock import Clock

__all__ = [
    "MIN_TOKEN_CHARS",
    "LoginThrottle",
    "Session",
    "Sessions",
    "UsersFile",
    "bearer_token",
    "hash_password",
    "parse_users",
    "same_secret",
    "set_password",
    "users_file_line",
    "users_file_problems",
    "verify_password",
]

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
"""The shortest API token accepted (``secrets.token_urlsafe(32)`` makes a good one)."""

_SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAX_MEMORY_BYTES = 256 << 20  # a hash in the users file cannot make a check cost more
_MAX_PASSWORD_CHARS = 1024
_MAX_NAME_CHARS = 100  # the limit the alert commands put on an actor's name


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
        maxmem=128 * r * (n + p + 2) + (1 << 20),
    )  # fmt: skip


def hash_password(password: str) -> str:
    """An scrypt hash of ``password`` with a fresh random salt:
    ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (base64url). ``ValueError`` for an empty or
    overlong (> 1024 characters) password."""
    if not password or len(password) > _MAX_PASSWORD_CHARS:
        raise ValueError(f"a password has 1 to {_MAX_PASSWORD_CHARS} characters")
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, _N, _R, _P, _KEY_BYTES)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def _parse_hash(encoded: str) -> tuple[bytes, int, int, int, bytes] | None:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if n < 2 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        return None
    if 128 * r * (n + p + 2) > _MAX_MEMORY_BYTES:
        return None
    if len(salt) < 8 or len(key) < 16:
        return None
    return salt, n, r, p, key


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the hash (constant-time compare); False for a
    malformed hash or an overlong password."""
    parsed = _parse_hash(encoded)
    if parsed is None or len(password) > _MAX_PASSWORD_CHARS:
        return False
    salt, n, r, p, key = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


def _name_problem(name: str) -> str | None:
    if not name:
        return "the name is empty"
    if len(name) > _MAX_NAME_CHARS:
        return f"the name is longer than {_MAX_NAME_CHARS} characters"
    if name != name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "the name has control characters or leading/trailing spaces"
    return None


def users_file_line(name: str, password: str) -> str:
    """The users file line for ``name`` (no ``:``, at most 100 characters; it is what the
    audit trail records) with a fresh hash of ``password``."""
    problem = _name_problem(name) or ("the name may not contain ':'" if ":" in name else None)
    if problem:
        raise ValueError(problem)
    return f"{name}:{hash_password(password)}"


def parse_users(text: str) -> tuple[dict[str, str], list[str]]:
    """``{name: hash}`` from a users file, and its problems (``line N: …``, never showing
    a hash). Bad lines are left out; a name given twice keeps its first line."""
    users: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        if not sep:
            problems.append(f"line {number}: expected name:hash")
            continue
        problem = _name_problem(name)
        if problem is None and _parse_hash(encoded) is None:
            problem = f"the hash is not a {_SCHEME}$… hash from users_file_line"
        if problem is None and name in users:
            problem = f"{name!r} is given twice (the first line counts)"
        if problem is not None:
            problems.append(f"line {number}: {problem}")
            continue
        users[name] = encoded
    if not users and not problems:
        problems.append("holds no user")
    return users, problems


def users_file_problems(text: str) -> list[str]:
    """What is wrong with a users file's text (empty when it is fine)."""
    return parse_users(text)[1]


def set_password(path: Path, name: str, password: str) -> None:
    """Add ``name`` to the users file at ``path`` or replace its hash (created if missing,
    written atomically, keeping the file's permissions). The running collector picks the
    change up at the next login."""
    line = users_file_line(name, password)
    try:
        old = path.read_text()
        mode: int | None = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        old, mode = "", None
    kept = [row for row in old.splitlines() if row.strip().partition(":")[0] != name]
    write_atomic(path, ("\n".join([*kept, line]) + "\n").encode("utf-8"))
    os.chmod(path, 0o600 if mode is None else mode)


class UsersFile:
    """The users file at ``path``, read again whenever it changes on disk (so adding or
    removing someone needs no restart; a removed user's sessions stop working at once).
    Unreadable: nobody can log in (logged). Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, str] = {}
        self._dummy: str | None = None

    def _current(self) -> dict[str, str]:
        with self._lock:
            try:
                info = self.path.stat()
                stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
                if stamp != self._stamp:
                    users, problems = parse_users(self.path.read_text())
                    for problem in problems:
                        log.warning("users file %s: %s", self.path, problem)
                    self._users, self._stamp = users, stamp
            except OSError as error:
                if self._stamp is not None or self._users:
                    log.error("cannot read the users file %s (%s): nobody can log in",
                              self.path, error.strerror)  # fmt: skip
                self._users, self._stamp = {}, None
            return self._users

    def has(self, name: str) -> bool:
        return name in self._current()

    def verify(self, name: str, password: str) -> bool:
        """Whether ``name`` exists and ``password`` is theirs; an unknown name takes as
        long as a wrong password."""
        encoded = self._current().get(name)
        if encoded is None:
            if self._dummy is None:
                self._dummy = hash_password(secrets.token_urlsafe(16))
            verify_password(password, self._dummy)
            return False
        return verify_password(password, encoded)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality of two secrets (tokens, CSRF values)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None.

    >>> bearer_token("Bearer abc"), bearer_token("bearer  abc "), bearer_token("Basic abc")
    ('abc', 'abc', None)
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True)
class Session:
    """A login: ``user``, the cookie value ``token``, the ``csrf`` value every form of
    this session carries, and when it ends (``expires_s``, on the monotonic clock)."""

    user: str
    token: str
    csrf: str
    expires_s: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Sessions:
    """Logins in memory, each ending ``ttl_s`` after it began; at most ``max_sessions``
    (the oldest goes first). Thread-safe."""

    def __init__(self, ttl_s: float, clock: Clock, max_sessions: int = 1000) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def create(self, user: str) -> Session:
        now_s = self.clock.monotonic()
        session = Session(user, secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          now_s + self.ttl_s)  # fmt: skip
        with self._lock:
            self._prune(now_s)
            while len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions, key=lambda key: self._sessions[key].expires_s)
                del self._sessions[oldest]
            self._sessions[_digest(session.token)] = session
        return session

    def get(self, token: str) -> Session | None:
        """The live session with this cookie value, else None."""
        key = _digest(token)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires_s <= self.clock.monotonic():
                del self._sessions[key]
                return None
            return session

    def end(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(_digest(token), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _prune(self, now_s: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires_s <= now_s]:
            del self._sessions[key]


class LoginThrottle:
    """Refuses logins for a (client address, name) after ``max_failures`` wrong passwords
    within ``window_s`` (default 10 in 10 minutes), until the oldest of them is that old.
    Per name too, so one client behind a proxy cannot lock everybody out. Thread-safe."""

    def __init__(
        self, clock: Clock, max_failures: int = 10, window_s: float = 600.0, max_keys: int = 10_000
    ) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], list[float]] = {}

    def wait_s(self, address: str, name: str) -> float:
        """Seconds before this client may try this name again (0: now)."""
        now_s = self.clock.monotonic()
        with self._lock:
            recent = self._recent((address, name), now_s)
            if len(recent) < self.max_failures:
                return 0.0
            return recent[-self.max_failures] + self.window_s - now_s

    def failed(self, address: str, name: str) -> None:
        now_s = self.clock.monotonic()
        with self._lock:
            if len(self._failures) >= self.max_keys:
                for key in list(self._failures):
                    if not self._recent(key, now_s):
                        del self._failures[key]
                if len(self._failures) >= self.max_keys:
                    self._failures.clear()
            self._failures.setdefault((address, name), []).append(now_s)

    def succeeded(self, address: str, name: str) -> None:
        with self._lock:
            self._failures.pop((address, name), None)

    def _recent(self, key: tuple[str, str], now_s: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if now_s - t < self.window_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times
