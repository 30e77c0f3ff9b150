"""The ways a notification leaves the collector, one module each: ``apprise_channel`` (people:
email, chat, push), ``mqtt_channel`` (retained alert state for machines) and ``alertmanager``
(Prometheus Alertmanager API v2). Each implements ``notify.Channel``."""
