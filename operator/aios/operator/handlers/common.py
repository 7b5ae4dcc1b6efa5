"""How a kind's controller is wired into the operator: it starts and stops with it, and
the operator's own watch of the kind feeds its store and queue (``runtime.watching``).

No kopf handlers on the kinds' objects: no kopf timers or daemons (each would make kopf
add its own finalizer to every object, and run a task per object), no change-detecting
handlers (their last-handled-configuration annotation doubles every object's size in
etcd), no event handlers (kopf's per-object machinery in front of the store). The kind's
periodic work runs on its controller's one tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from aios.connectors.audit import AuditUnavailable
from aios.operator.audit import record
from aios.operator.runtime.controller import Controller, KindSpec
from aios.operator.runtime.runtime import Runtime


def runtime(memo: kopf.Memo) -> Runtime:
    found: Runtime = memo.runtime
    return found


def register(spec: KindSpec) -> None:
    """Run ``spec``'s kind with a Controller from the operator's start to its end."""
    plural, singular = spec.plural, spec.model.crd.singular

    @kopf.on.startup(id=f"start-{singular}")
    async def start(memo: kopf.Memo, **_: Any) -> None:
        process = runtime(memo)
        controller = Controller(
            spec,
            process.api,
            memo,
            process.settings,
            process.leadership,
            process.workers,
            on_gone=process.children.forget,
        )
        process.controllers[plural] = controller
        controller.start()
        if process.watching is not None:
            process.watching.feed(plural, controller)

    @kopf.on.cleanup(id=f"stop-{singular}")
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        controller = runtime(memo).controllers.pop(plural, None)
        if controller is not None:
            await controller.stop()


async def audited(
    kind: str, subject: str, refused: str | None, userinfo: Mapping[str, Any], dryrun: bool
) -> None:
    """An admission attempt of a person's object (an Approval, a ManualAction) recorded as a
    ``kind`` audit event (not for a dry run: no side effects), then denied when refused."""
    if not dryrun:
        details = {"outcome": "denied" if refused else "admitted", "reason": refused or ""}
        try:
            await record(kind, subject, details, actor=userinfo.get("username"))
        except AuditUnavailable as error:
            raise kopf.AdmissionError(f"the attempt could not be audited: {error}", 503) from error
    if refused is not None:
        raise kopf.AdmissionError(refused, code=403)
