"""The local site: obtain, start and stop the real components on loopback ports."""
