"""The central collector: takes every agent's messages off the broker (and, as it grows,
stores them in InfluxDB, detects anomalies and raises alerts)."""
