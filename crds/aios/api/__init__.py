"""The aios API: pydantic models of the custom resources, the single source of truth.

Each root model carries its CRD facts in `Model.crd` (kind, plural, short names, printer
columns); `aios.api.crd.crd_for(Model)` renders the CustomResourceDefinition.
"""

from typing import Any

from aios.api.approval import Approval
from aios.api.automation_intent import AutomationIntent
from aios.api.base import API_VERSION, GROUP, VERSION, Resource
from aios.api.edge_gateway import EdgeGateway
from aios.api.manual_action import ManualAction
from aios.api.model_deployment import ModelDeployment
from aios.api.model_rollout import ModelRollout
from aios.api.policy import Policy
from aios.api.replay import IntentReplay

KINDS: tuple[type[Resource[Any, Any]], ...] = (
    ModelDeployment,
    AutomationIntent,
    Policy,
    EdgeGateway,
    Approval,
    ManualAction,
)
"""Every kind users write, in the order the CRDs are generated."""
RECORDS: tuple[type[Resource[Any, Any]], ...] = (ModelRollout, IntentReplay)
"""Kinds only aios's own components and aiosctl write (users read them): nothing reconciles
them."""
CRD_KINDS: tuple[type[Resource[Any, Any]], ...] = (*KINDS, *RECORDS)
"""Every root model, in the order the CRDs are generated."""
PLURALS: dict[str, str] = {model.crd.kind: model.crd.plural for model in CRD_KINDS}
"""Each kind's plural (what a reference or a review names → what the API and the
operator's stores are keyed by)."""

__all__ = [
    "API_VERSION",
    "CRD_KINDS",
    "GROUP",
    "KINDS",
    "PLURALS",
    "RECORDS",
    "VERSION",
    "Approval",
    "AutomationIntent",
    "EdgeGateway",
    "IntentReplay",
    "ManualAction",
    "ModelDeployment",
    "ModelRollout",
    "Policy",
    "Resource",
]
