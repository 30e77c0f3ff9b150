"""The edge agent: reads sensors on a Raspberry Pi and publishes every reading over MQTT.

Readings are committed to an on-disk outbox before they are published and removed only once
the broker has acknowledged them, so outages of the network, the broker or the power lose
nothing that was committed.
"""
