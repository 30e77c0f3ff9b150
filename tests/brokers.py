"""Re-export of the local process runners for tests."""

from sitewatch.localrun import Mosquitto, free_port, have_mosquitto, wait_until

__all__ = ["Mosquitto", "free_port", "have_mosquitto", "wait_until"]
