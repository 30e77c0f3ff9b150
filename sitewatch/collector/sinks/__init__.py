"""Where line protocol is stored: one ``Sink`` per InfluxDB API, chosen by ``influx.api``.

``v1`` (``influx_v1``): ``POST /write`` for InfluxDB 1.x as Debian and Raspberry Pi OS ship
it. ``v2`` (``influx_v2``): influxdb-client's write API for InfluxDB 2.x/3.x/Cloud/1.8+.
Both classify every answer the same way (``classify``). influxdb-client is imported only
when ``v2`` is configured.
"""

from __future__ import annotations

from sitewatch.clock import Clock
from sitewatch.collector.config import InfluxConfig
from sitewatch.collector.protocols import Sink

__all__ = ["build_sink"]


def build_sink(config: InfluxConfig, *, clock: Clock | None = None) -> Sink:
    """The sink ``config`` describes; secrets (password, token) are read now."""
    if config.api == "v1":
        from sitewatch.collector.sinks.influx_v1 import InfluxV1Sink

        if config.database is None:  # the config's own validation makes this unreachable
            raise ValueError("influx.database: required with api v1")
        return InfluxV1Sink(
            config.url,
            config.database,
            retention_policy=config.retention_policy,
            username=config.username,
            password=config.password(),
            timeout_s=config.timeout_s,
            clock=clock,
        )
    from sitewatch.collector.sinks.influx_v2 import InfluxV2Sink

    if config.org is None or config.bucket is None:  # likewise unreachable
        raise ValueError("influx.org and influx.bucket: required with api v2")
    return InfluxV2Sink(
        config.url,
        org=config.org,
        bucket=config.bucket,
        token=config.token() or "",
        gzip=config.gzip,
        timeout_s=config.timeout_s,
        clock=clock,
    )
