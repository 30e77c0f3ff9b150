"""A small certificate authority for one sitewatch installation, run with the ``openssl`` CLI.

The CA signs the broker's server certificate and a client certificate per device and for the
collector. Its directory holds ``ca.crt`` (public: every client gets a copy to verify the
broker), ``ca.key`` (mode 0600, in a 0700 directory; whoever holds it can mint certificates,
so keep it on the central server, root only, or offline) and ``ca.srl`` (the next serial).

Keys are ECDSA P-256 (small and quick on a Pi, supported by every OpenSSL that mosquitto and
Python link against) and are written with mode 0600. The ``openssl`` command is used rather
than the ``cryptography`` package: sitewatch does not depend on ``cryptography``, and every
Debian / Raspberry Pi OS system has ``openssl`` (it comes with ``ca-certificates``).

Certificates: the CA for ``CA_DAYS`` (10 years); leaves for ``LEAF_DAYS`` (825 days, then
provision again). Server certificates carry the broker's names and addresses as
subjectAltName (what clients check) and ``serverAuth``; client certificates ``clientAuth``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CA_DAYS",
    "LEAF_DAYS",
    "CertificateAuthority",
    "PkiError",
    "subject_alt_names",
]

CA_DAYS = 3650
"""How long the CA certificate is valid (days)."""

LEAF_DAYS = 825
"""How long broker, device and collector certificates are valid (days)."""

_HOSTNAME_RE = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")
_COMMON_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}$")

_EXTENSIONS = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {common_name}
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {alt_names}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class PkiError(RuntimeError):
    """openssl is missing or failed, or a name cannot go in a certificate."""


def subject_alt_names(hosts: list[str]) -> str:
    """``DNS:name`` / ``IP:address`` entries for a server certificate, or ``PkiError``."""
    if not hosts:
        raise PkiError("a server certificate needs at least one host name or address")
    entries = []
    for host in hosts:
        try:
            entries.append(f"IP:{ipaddress.ip_address(host)}")
        except ValueError:
            if not _HOSTNAME_RE.match(host) or len(host) > 253:
                raise PkiError(f"{host!r} is neither an IP address nor a host name") from None
            entries.append(f"DNS:{host}")
    return ", ".join(entries)


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise PkiError("the openssl command is not installed (apt-get install openssl)")
    # umask 077: whatever openssl creates (keys above all) is readable by the owner only.
    result = subprocess.run([binary, *args], capture_output=True, text=True, umask=0o077,
                            check=False)
    if result.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path))
    path.chmod(0o600)


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA in ``directory`` (see the module docstring for its files)."""

    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serial(self) -> Path:
        return self.directory / "ca.srl"

    @classmethod
    def open_or_create(
        cls, directory: Path, name: str = "sitewatch CA"
    ) -> tuple[CertificateAuthority, bool]:
        """The CA in ``directory``, made first (True) when it has no ``ca.crt`` yet."""
        ca = cls(directory)
        if ca.cert.exists():
            if not ca.key.exists():
                raise PkiError(f"{ca.cert} exists but {ca.key} does not: cannot sign with it")
            return ca, False
        if ca.key.exists():
            raise PkiError(f"{ca.key} exists without {ca.cert}: move it away or restore it")
        if not directory.is_dir():
            directory.mkdir(parents=True)
            directory.chmod(0o700)
        with tempfile.TemporaryDirectory(dir=directory) as work:
            cnf = Path(work) / "openssl.cnf"
            cnf.write_text(_EXTENSIONS.format(common_name=name, alt_names="DNS:unused"))
            key, cert = Path(work) / "ca.key", Path(work) / "ca.crt"
            _new_key(key)
            _openssl("req", "-x509", "-new", "-key", str(key), "-config", str(cnf),
                     "-extensions", "ca", "-days", str(CA_DAYS), "-out", str(cert))
            cert.chmod(0o644)
            os.replace(key, ca.key)
            os.replace(cert, ca.cert)
        return ca, True

    def issue(
        self,
        common_name: str,
        usage: Literal["server", "client"],
        cert_path: Path,
        key_path: Path,
        *,
        hosts: list[str] | None = None,
        days: int = LEAF_DAYS,
    ) -> None:
        """A new key (mode 0600) and a certificate signed by this CA, written to
        ``key_path``/``cert_path`` (replacing what was there). ``hosts`` (server only): the
        names and addresses clients connect to."""
        if not _COMMON_NAME_RE.match(common_name):
            raise PkiError(f"{common_name!r} cannot be a certificate's common name")
        alt_names = subject_alt_names(hosts or []) if usage == "server" else "DNS:unused"
        for path in (cert_path, key_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=key_path.parent) as work:
            cnf = Path(work) / "openssl.cnf"
            cnf.write_text(_EXTENSIONS.format(common_name=common_name, alt_names=alt_names))
            key, csr, cert = (Path(work) / name for name in ("leaf.key", "leaf.csr", "leaf.crt"))
            _new_key(key)
            _openssl("req", "-new", "-key", str(key), "-config", str(cnf), "-out", str(csr))
            serial = ["-CAserial", str(self.serial)]
            if not self.serial.exists():
                serial.append("-CAcreateserial")
            _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey",
                     str(self.key), *serial, "-days", str(days), "-sha256",
                     "-extfile", str(cnf), "-extensions", usage, "-out", str(cert))
            cert.chmod(0o644)
            os.replace(key, key_path)
            shutil.move(cert, cert_path)
