"""sitewatch: facilities monitoring from Raspberry Pi sensors to technicians' phones."""

__version__ = "0.1.0"
