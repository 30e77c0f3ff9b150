#!/usr/bin/env bash
# Make this machine able to run sitewatch: system packages from apt when missing, and a
# virtualenv in .venv with the project and its dev tools. Safe to run again: it only does
# what is missing. Sourced by scripts/test and scripts/demo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

missing=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing+=(mosquitto)
fi
if ! command -v influxd >/dev/null 2>&1 && [ ! -x /usr/bin/influxd ]; then
    missing+=(influxdb)
fi
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
# The tests also talk to a real Alertmanager and drive the web page in a real headless
# Chromium; scripts/test asks for them, and for mosquitto_pub, which the benches publish with.
if [ "${SITEWATCH_TEST_TOOLS:-0}" = 1 ]; then
    command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
    command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        SUDO="none"
    fi
    if [ "$SUDO" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "sitewatch needs these packages, and cannot install them here:" >&2
        echo "    ${missing[*]}" >&2
        echo "Install them with your package manager (Debian/Ubuntu/Raspberry Pi OS:" >&2
        echo "    sudo apt-get install ${missing[*]}" >&2
        echo "), then run this command again." >&2
        exit 1
    fi
    echo "==> installing ${missing[*]} with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The packages start a system-wide broker and influxd on Debian; sitewatch's scripts never use
# them (they start their own on free loopback ports), so they are left as the distribution set
# them up.

stamp="$VENV/.sitewatch-installed"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV" >&2
    python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing sitewatch and its dev tools into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
    echo "$want" > "$stamp"
fi

# VictoriaMetrics, the real server the InfluxDB v2 write path is tested against, is only in
# Debian's unstable suite: fetch it into .cache/ without installing it. Without it the v2
# tests skip (and fail under CI), so a failure here does not stop everything else.
if ! bash "$ROOT/scripts/fetch-victoria-metrics.sh" >/dev/null; then
    echo "warning: could not fetch victoria-metrics; the InfluxDB v2 write tests will skip" >&2
fi
