"""Read a Raspberry Pi ``config.txt`` and the kernel's evidence of what it loaded.

``check`` uses this to tell an installer which overlay line a sensor needs and which GPIO
pins the firmware already gives to kernel drivers (a DHT22 overlay, the 1-Wire bus, I2C,
SPI, the UART). The file is only advisory: tools that grep it miss conditional sections and
``include`` files, and an edit means nothing until the next reboot, so ``runtime_evidence``
looks at what the kernel actually created under ``/sys`` and ``/dev``. Nothing here writes
to ``config.txt``.

Parsing follows the firmware's rules where they matter for pins:

- ``dtoverlay=name,param=value`` loads an overlay; ``dtparam=`` lines that follow it set
  that overlay's parameters until the next ``dtoverlay=`` (an empty one ends the scope).
- Other ``dtparam=`` lines set base parameters, several per line
  (``dtparam=i2c_arm=on,spi=on``); ``i2c`` is an alias of ``i2c_arm``; a bare name means on.
- ``[pi4]``-style headers start a conditional section, ``[all]`` ends it, and nothing under
  ``[none]`` applies. Each directive records its section.
- ``include file`` is read in place, relative to the including file.

>>> fw = parse_config_txt("dtparam=i2c_arm=on,spi=on\\n[pi4]\\ndtoverlay=dht11,gpiopin=17\\n")
>>> [(c.pin, c.directive.label, c.directive.section) for c in fw.claims()][-1]
(17, 'dtoverlay=dht11', '[pi4]')
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from sitewatch.agent.pins import OVERLAY_DEFAULT_PINS, parse_pin

__all__ = [
    "DEFAULT_CONFIG_TXT",
    "LEGACY_CONFIG_TXT",
    "Directive",
    "FirmwareClaim",
    "FirmwareConfig",
    "RuntimeEvidence",
    "locate_config_txt",
    "parse_config_txt",
    "read_config_txt",
    "runtime_evidence",
]

DEFAULT_CONFIG_TXT = Path("/boot/firmware/config.txt")
"""Where the firmware config lives since Raspberry Pi OS Bookworm."""
LEGACY_CONFIG_TXT = Path("/boot/config.txt")
"""The pre-Bookworm location; on Bookworm it is a 'DO NOT EDIT' stub."""

_ON = frozenset({"on", "true", "yes", "1"})
_PIN_PARAMS: dict[str, dict[str, int]] = {
    "dht11": {"gpiopin": OVERLAY_DEFAULT_PINS["dht11"][0]},
    "w1-gpio": {"gpiopin": OVERLAY_DEFAULT_PINS["w1-gpio"][0]},
    "w1-gpio-pullup": {"gpiopin": OVERLAY_DEFAULT_PINS["w1-gpio"][0], "extpullup": 5},
}
"""Overlay → its GPIO parameters and their defaults (``boot/overlays/README``)."""
_OVERLAY_PARAMS = {"dht11": {"gpiopin"}, "w1-gpio": {"gpiopin", "pullup"},
                   "w1-gpio-pullup": {"gpiopin", "pullup", "extpullup"}}
_BASE_ALIASES = {"i2c": "i2c_arm", "i2c1": "i2c_arm"}
_BASE_PARAMS = frozenset({"i2c_arm", "i2c", "i2c1", "i2c_vc", "i2s", "spi", "audio", "uart0",
                          "uart1", "watchdog", "random", "i2c_arm_baudrate", "i2c_baudrate"})
_ALIASES = {"w1-gpio-pullup": "w1-gpio"}
"""Overlays that do the job of another: the pull-up variant still gives a 1-Wire bus."""
_MODEL_FILTERS = ("pi", "cm", "board-type")
_MAX_INCLUDE_DEPTH = 4


@dataclass(frozen=True)
class Directive:
    """One ``dtoverlay=``/``dtparam=``/``enable_uart=`` setting.

    ``name`` is the overlay, or the base parameter under its canonical name (``i2c_arm``);
    ``params`` the overlay's parameters (later ``dtparam=`` lines included); ``value`` a base
    parameter's value. ``section`` is ``"all"`` or the active filters (``"[pi4]"``);
    ``applies`` is False under ``[none]``.
    """

    kind: str
    name: str
    source: Path
    line_no: int
    text: str
    params: dict[str, str] = field(default_factory=dict)
    value: str = "on"
    section: str = "all"
    applies: bool = True

    @property
    def label(self) -> str:
        """``dtoverlay=dht11``, ``dtparam=spi`` or ``enable_uart``."""
        return self.kind if self.kind == "enable_uart" else f"{self.kind}={self.name}"

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line_no}"

    @property
    def enabled(self) -> bool:
        """Whether the directive turns something on (always, for an overlay)."""
        return self.kind == "dtoverlay" or self.value.strip().lower() in _ON

    @property
    def conditional(self) -> bool:
        return self.section != "all"

    def provides(self, overlay: str) -> bool:
        """Whether this directive does what ``overlay`` (a need's name) asks for."""
        return self.applies and self.enabled and overlay in (self.name, _ALIASES.get(self.name))

    def pins(self) -> tuple[int, ...]:
        """GPIO pins this directive gives to a kernel driver (none when it is off).

        Raises ValueError for a pin parameter that is not a header GPIO (``gpiopin=abc``).
        """
        if not (self.applies and self.enabled):
            return ()
        if self.kind == "enable_uart":
            return OVERLAY_DEFAULT_PINS["uart0"]
        if self.kind == "dtparam":
            return OVERLAY_DEFAULT_PINS.get(self.name, ())
        defaults = _PIN_PARAMS.get(self.name)
        if defaults is None:
            explicit = [self.params[key] for key in ("gpiopin", "gpio_pin") if key in self.params]
            return tuple(parse_pin(value) for value in explicit)
        return tuple(parse_pin(self.params.get(key, default)) for key, default in defaults.items())

    def main_pin(self) -> int | None:
        """The pin an overlay is bound to (``gpiopin``), for matching a sensor's need."""
        pins = self.pins()
        return pins[0] if pins and self.kind == "dtoverlay" else None


@dataclass(frozen=True)
class FirmwareClaim:
    """A GPIO pin the firmware gives to a kernel driver through ``directive``."""

    pin: int
    directive: Directive


@dataclass(frozen=True)
class FirmwareConfig:
    """A parsed ``config.txt``: its directives in file order and any lines it could not use."""

    path: Path
    directives: tuple[Directive, ...]
    problems: tuple[str, ...] = ()

    def claims(self) -> list[FirmwareClaim]:
        """Every pin claimed by a directive that applies (bad pin values are skipped)."""
        claims: list[FirmwareClaim] = []
        for directive in self.directives:
            try:
                pins = directive.pins()
            except ValueError:
                continue  # reported in ``problems`` while parsing
            claims.extend(FirmwareClaim(pin, directive) for pin in pins)
        return claims

    def providing(self, overlay: str) -> list[Directive]:
        """Directives that load ``overlay`` (or enable the base parameter of that name)."""
        return [d for d in self.directives if d.provides(_BASE_ALIASES.get(overlay, overlay))]


_Where = tuple[Path, int, str]
"""A line's file, number and text."""


class _Parser:
    def __init__(self) -> None:
        self.directives: list[Directive] = []
        self.problems: list[str] = []
        self.filters: list[str] = []
        self.overlay: Directive | None = None

    @property
    def section(self) -> str:
        return "".join(f"[{name}]" for name in self.filters) or "all"

    def add(self, kind: str, name: str, where: _Where, value: str = "on") -> Directive:
        directive = Directive(kind, name, *where, value=value, section=self.section,
                              applies="none" not in self.filters)
        self.directives.append(directive)
        return directive

    def header(self, name: str) -> None:
        if name == "all":
            self.filters.clear()
            return
        if name.startswith(_MODEL_FILTERS):  # a board filter replaces the previous one
            self.filters = [f for f in self.filters if not f.startswith(_MODEL_FILTERS)]
        self.filters.append(name)

    def overlay_line(self, value: str, where: _Where) -> None:
        name, *rest = value.split(",")
        if not name:
            self.overlay = None  # ``dtoverlay=`` alone ends the overlay's parameter scope
            return
        self.overlay = self.add("dtoverlay", name, where)
        for item in rest:
            key, _, param = item.partition("=")
            self.overlay.params[key.strip()] = param.strip() or "on"
        self.validate(self.overlay)

    def param_line(self, value: str, where: _Where) -> None:
        for item in value.split(","):
            key, _, param = (part.strip() for part in item.partition("="))
            if not key:
                continue
            overlay = self.overlay
            if overlay is not None and self.belongs_to_overlay(overlay.name, key):
                overlay.params[key] = param or "on"
                if where[2] not in overlay.text:  # show the overlay's lines together
                    index = self.directives.index(overlay)
                    overlay = replace(overlay, text=f"{overlay.text}; {where[2]}")
                    self.overlay = self.directives[index] = overlay
                self.validate(overlay)
            else:
                self.add("dtparam", _BASE_ALIASES.get(key, key), where, value=param or "on")

    @staticmethod
    def belongs_to_overlay(overlay: str, key: str) -> bool:
        known = _OVERLAY_PARAMS.get(overlay)
        return key in known if known is not None else key not in _BASE_PARAMS

    def validate(self, directive: Directive) -> None:
        try:
            directive.pins()
        except ValueError as error:
            self.problems.append(f"{directive.where}: {directive.text!r}: {error}")


def _parse_into(parser: _Parser, text: str, source: Path, depth: int) -> None:
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = (source, line_no, line)
        if line.startswith("[") and line.endswith("]"):
            parser.header(line[1:-1].strip().lower())
        elif line.startswith("include ") or line.startswith("include\t"):
            _include(parser, source.parent / line[len("include"):].strip(), depth, where)
        elif "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key in ("dtoverlay", "device_tree_overlay"):
                parser.overlay_line(value, where)
            elif key in ("dtparam", "device_tree_param"):
                parser.param_line(value, where)
            elif key == "enable_uart":
                parser.add("enable_uart", "uart0", where, value=value)


def _include(parser: _Parser, path: Path, depth: int, where: _Where) -> None:
    if depth >= _MAX_INCLUDE_DEPTH:
        parser.problems.append(f"{where[0]}:{where[1]}: includes nested too deeply, not read")
        return
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        parser.problems.append(f"{where[0]}:{where[1]}: cannot read {path}: {error.strerror}")
        return
    _parse_into(parser, text, path, depth + 1)


def parse_config_txt(text: str, source: Path | str = DEFAULT_CONFIG_TXT) -> FirmwareConfig:
    """Parse config.txt text; ``source`` names it in messages and anchors ``include``."""
    parser = _Parser()
    _parse_into(parser, text, Path(source), 0)
    return FirmwareConfig(Path(source), tuple(parser.directives), tuple(parser.problems))


def read_config_txt(path: Path | str) -> FirmwareConfig:
    """Read and parse a config.txt; OSError (FileNotFoundError…) when it cannot be read."""
    path = Path(path)
    return parse_config_txt(path.read_text(errors="replace"), path)


def locate_config_txt(preferred: Path | str = DEFAULT_CONFIG_TXT) -> Path:
    """The config.txt to read: ``preferred`` unless it is the missing Bookworm default and the
    pre-Bookworm ``/boot/config.txt`` is a real file (not the 'moved' stub)."""
    preferred = Path(preferred)
    if preferred != DEFAULT_CONFIG_TXT or preferred.exists():
        return preferred
    try:
        legacy = LEGACY_CONFIG_TXT.read_text(errors="replace")
    except OSError:
        return preferred
    return preferred if "DO NOT EDIT" in legacy.upper() else LEGACY_CONFIG_TXT


@dataclass(frozen=True)
class RuntimeEvidence:
    """What the running kernel shows, whatever config.txt says.

    ``dht_pins``: GPIOs of kernel DHT devices (IIO devices named ``dht11@<hex gpio>``);
    ``dht_unnamed``: how many are named plain ``dht11`` (no pin: some kernels);
    ``w1_masters``/``w1_sensors``: 1-Wire bus masters and DS18B20 ids (``28-…``);
    ``i2c``/``spi``/``watchdog``: the device nodes exist.
    """

    dht_pins: frozenset[int]
    dht_unnamed: int
    w1_masters: tuple[str, ...]
    w1_sensors: tuple[str, ...]
    i2c: bool
    spi: bool
    watchdog: bool

    def shows(self, overlay: str, pin: int | None = None) -> bool | None:
        """Whether the kernel has what ``overlay`` provides; None when we cannot tell."""
        overlay = _BASE_ALIASES.get(_ALIASES.get(overlay, overlay), overlay)
        if overlay == "dht11":
            if pin is None or pin in self.dht_pins:
                return bool(self.dht_pins) or self.dht_unnamed > 0
            # A pinless name can only be "our" device when it is the only one.
            return self.dht_unnamed == 1 and not self.dht_pins
        if overlay == "w1-gpio":
            return bool(self.w1_masters)
        return {"i2c_arm": self.i2c, "spi": self.spi, "watchdog": self.watchdog}.get(overlay)


def _dht_pin(name: str) -> int | None:
    _, _, unit = name.partition("@")
    try:
        return int(unit, 16)
    except ValueError:
        return None


def runtime_evidence(
    sysfs_root: Path | str = "/sys", dev_root: Path | str = "/dev"
) -> RuntimeEvidence:
    """Look under ``sysfs_root`` and ``dev_root`` for the devices overlays create."""
    sysfs, dev = Path(sysfs_root), Path(dev_root)
    dht_pins: set[int] = set()
    dht_unnamed = 0
    for name_file in sorted((sysfs / "bus" / "iio" / "devices").glob("*/name")):
        try:
            name = name_file.read_text().strip()
        except OSError:
            continue
        pin = _dht_pin(name) if name.startswith("dht11@") else None
        if pin is not None:
            dht_pins.add(pin)
        elif name == "dht11":
            dht_unnamed += 1
    w1 = sysfs / "bus" / "w1" / "devices"
    return RuntimeEvidence(
        dht_pins=frozenset(dht_pins),
        dht_unnamed=dht_unnamed,
        w1_masters=tuple(sorted(p.name for p in w1.glob("w1_bus_master*"))),
        w1_sensors=tuple(sorted(p.name for p in w1.glob("28-*"))),
        i2c=(dev / "i2c-1").exists(),
        spi=(dev / "spidev0.0").exists(),
        watchdog=(dev / "watchdog0").exists(),
    )
