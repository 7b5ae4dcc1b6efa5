"""Every aios kind: record that the operator has seen the latest generation, and whether
its spec is acceptable. Kind-specific handlers build on the same status."""

from __future__ import annotations

from typing import Any

import kopf

from aios.api import GROUP, KINDS, VERSION, Resource
from aios.operator.reconcile.acceptance import acceptance, needs_reconcile, next_status
from aios.operator.reconcile.conditions import now_rfc3339


def _register(model: type[Resource[Any, Any]]) -> None:
    # An event handler, not kopf's change-detecting create/update handlers: those keep a
    # last-handled-configuration annotation that doubles each object's size in etcd.
    @kopf.on.event(GROUP, VERSION, model.crd.plural, id=f"accept-{model.crd.singular}")
    def accept(type: str | None, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        if type == "DELETED" or not needs_reconcile(body):
            return
        patch.status.update(next_status(body, [acceptance(model, body)], now_rfc3339()))


for _model in KINDS:
    _register(_model)
