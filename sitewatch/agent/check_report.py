"""What ``sitewatch-agent check`` found, and how it is printed.

Checking produces ``Finding`` records; ``render`` prints them. Keeping the two apart lets
tests assert on findings and lets another front end (JSON, a web page) reuse them.

Statuses: ``OK`` works; ``WARN`` works now but worse than it should (a DHT22 on the
adafruit fallback because the kernel overlay is missing, an overlay only under ``[pi4]``);
``FAIL`` does not work, or will stop working at the next reboot.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TextIO

__all__ = ["EXIT_CONFIG", "EXIT_FAIL", "EXIT_OK", "Finding", "Status", "exit_code", "render"]

EXIT_OK = 0
"""Nothing FAILed (WARN rows may still be worth a look)."""
EXIT_FAIL = 1
"""At least one FAIL."""
EXIT_CONFIG = 2
"""The agent config itself is invalid; nothing else was checked."""


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """One row: a sensor (or ``config.txt``), its driver, what was found, and the fix.

    ``detail`` is the value read (``temperature_c=4.2``) or the exact problem; ``fix`` says
    what to do about a problem, naming the file, line and command where there is one.
    """

    sensor: str
    driver: str
    status: Status
    detail: str
    fix: str = ""


def exit_code(findings: list[Finding]) -> int:
    """``EXIT_FAIL`` if any finding FAILed, else ``EXIT_OK``."""
    return EXIT_FAIL if any(f.status is Status.FAIL for f in findings) else EXIT_OK


def render(findings: list[Finding], out: TextIO) -> None:
    """Print findings as a table; a fix goes on its own line under the problem it fixes."""
    header = ("sensor", "driver", "status", "value / problem")
    rows = [(f.sensor, f.driver, f.status.value, f.detail) for f in findings]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(3)]
    indent = " " * (sum(widths) + 2 * len(widths))

    def line(cells: tuple[str, str, str, str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
        return "  ".join([*padded, cells[3]])

    print(line(header), file=out)
    for finding, row in zip(findings, rows, strict=True):
        print(line(row), file=out)
        if finding.fix:
            print(f"{indent}fix: {finding.fix}", file=out)
    counts = {status: sum(f.status is status for f in findings) for status in Status}
    print(", ".join(f"{count} {status.value}" for status, count in counts.items()), file=out)
