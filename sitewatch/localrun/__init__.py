"""Servers run as plain local processes on free loopback ports: for the demo and the tests.

- ``process``: ``ServerProcess``, the life cycle they share (start and wait until ready or
  dead, ``stop`` with SIGTERM, ``kill`` with SIGKILL, start again on the same port with the
  same state, ``log_tail``, ``with``), and ``free_port``/``wait_until``.
- ``mosquitto``: ``Mosquitto``, the MQTT broker with the project's ``broker/mosquitto.conf``.
- ``alertmanager``: ``Alertmanager``, Prometheus Alertmanager (API v2) with clustering off.
- ``influxd``: ``Influxd``, InfluxDB 1.6 (Debian ``influxdb``) with InfluxQL read-back helpers.
- ``victoria``: ``VictoriaMetrics``, a server that speaks InfluxDB's v2 write API.
"""

from __future__ import annotations

from sitewatch.localrun.alertmanager import Alertmanager, have_alertmanager
from sitewatch.localrun.influxd import Influxd, InfluxQLError, have_influxd
from sitewatch.localrun.mosquitto import (
    BROKER_CONF,
    Mosquitto,
    have_mosquitto,
    require_mosquitto_pub,
)
from sitewatch.localrun.process import PROJECT_ROOT, ServerProcess, free_port, wait_until
from sitewatch.localrun.victoria import (
    VICTORIA_METRICS_CACHE,
    VictoriaMetrics,
    victoria_metrics_binary,
)

__all__ = [
    "BROKER_CONF",
    "PROJECT_ROOT",
    "VICTORIA_METRICS_CACHE",
    "Alertmanager",
    "InfluxQLError",
    "Influxd",
    "Mosquitto",
    "ServerProcess",
    "VictoriaMetrics",
    "free_port",
    "have_alertmanager",
    "have_influxd",
    "have_mosquitto",
    "require_mosquitto_pub",
    "victoria_metrics_binary",
    "wait_until",
]
