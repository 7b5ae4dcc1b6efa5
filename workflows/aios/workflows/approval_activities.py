"""The activity behind ``aios.workflows.approval``: read an Approval through the API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from aios.api import GROUP, VERSION, Approval
from aios.connectors.kube import api_client
from aios.workflows.approval_io import READ_APPROVAL, ApprovalRef, Decided
from aios.workflows.settings import WorkerSettings


class ApprovalActivities:
    """Reads Approvals with the worker's own credentials (its Role: get approvals)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.kubeconfig = settings.env.get("KUBECONFIG")
        self._api: client.ApiClient | None = None

    def all(self) -> Sequence[Callable[..., Any]]:
        return [self.read_approval]

    @activity.defn(name=READ_APPROVAL)
    async def read_approval(self, ref: ApprovalRef) -> Decided:
        return await asyncio.to_thread(self._read, ref)

    def _read(self, ref: ApprovalRef) -> Decided:
        if self._api is None:
            self._api = api_client(kubeconfig=self.kubeconfig)
        try:
            raw: Any = client.CustomObjectsApi(self._api).get_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, Approval.crd.plural, ref.name
            )
        except ApiException as error:
            if error.status == 404:
                return Decided(ref.name, found=False)
            raise
        spec = Approval.model_validate(raw).spec
        return Decided(
            name=ref.name,
            found=True,
            kind=spec.target.kind,
            target=spec.target.name,
            version=spec.target.version,
            approved=spec.decision == "approved",
            username=spec.approver.username,
            groups=list(spec.approver.groups),
            reason=spec.reason,
            at=raw["metadata"]["creationTimestamp"],
        )
