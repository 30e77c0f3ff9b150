"""Secure deployment: per-device broker logins, ACLs, TLS certificates and ready configs.

- ``mosquitto_auth``: mosquitto's password file (``$7$`` PBKDF2-SHA512 hashes) and ACL file,
  and the rules (a device publishes only its own topics; the collector reads all).
- ``pki``: a small CA run with the ``openssl`` CLI (broker, device and collector certificates).
- ``bundles``: what ``provision-device``, ``provision-collector`` and ``provision-broker``
  write for each machine.
- ``cli``: those ``sitewatch-collector`` subcommands.

``broker/mosquitto-secure.conf`` is the broker configuration these files fit; the steps are
in ``docs/install.md``.
"""
