"""Temporal workflows (deterministic) and their activities (all side effects)."""
