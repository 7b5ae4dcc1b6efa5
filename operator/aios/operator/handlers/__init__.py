"""Thin kopf wiring: each handler reads the object, calls a pure function, writes the result."""
