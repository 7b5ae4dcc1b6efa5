"""What kopf does in the operator: the webhooks, start-up and clean-up, never an object of a
watched kind (its per-object machinery cost a fifth of the operator's time at 10,000)."""

from __future__ import annotations

import kopf

from aios.operator import main  # noqa: F401  (imports every handler module)


def test_kopf_has_no_handler_on_objects() -> None:
    registry = kopf.get_default_registry()
    for handlers in (registry._watching, registry._changing, registry._spawning):
        assert handlers.get_all_handlers() == [], (
            "a kopf handler on objects brings back kopf's per-object work (and finalizers): "
            "the operator's informers feed its stores (aios.operator.runtime.watching)"
        )
