"""ModelDeployment → what serves it, the children that do, and what to tell the workflow. Pure.

What serves is decided in two places: the operator serves the first version directly
(there is nothing to protect yet) and records it as ``status.stable`` once it answers;
after that every new version goes through a rollout workflow, which reports in
``status.rollout`` (phase, traffic weight) and the operator serves what it says.

Raw mode (no KServe in the cluster) runs one Deployment per served version, named after
the version, so promotion never restarts anything: the stable Service (``<name>``) and
the canary or shadow Service (``<name>-canary`` / ``<name>-shadow``) select a version's
pods, and promotion moves the stable Service's selector to the already warm new version.
Callers split traffic themselves from ``status`` (``aios.connectors.inference.route``).
With KServe, an InferenceService per track (``<name>``, ``<name>-canary``, ``<name>-shadow``),
which callers split between in the same way.

The parts: ``serving`` (what serves, what to do about the rollout), ``names`` (names,
ports, storage), ``server`` (the model server container), ``raw`` and ``kserve`` (the
children of each mode), ``status`` (what the operator writes back).
"""

from aios.api.model_deployment import version_slug
from aios.operator.reconcile.model_deployment.kserve import (
    INFERENCE_SERVICES_CRD,
    KSERVE_KINDS,
    KSERVE_VERSION,
    kserve_endpoints,
    render_kserve,
)
from aios.operator.reconcile.model_deployment.names import (
    MODEL_DEPLOYMENT,
    MODEL_MOUNT,
    SERVED_VERSION,
    endpoints,
    mirrored,
    service_name,
    storage,
)
from aios.operator.reconcile.model_deployment.raw import CHILD_KINDS, render_raw
from aios.operator.reconcile.model_deployment.server import server_container
from aios.operator.reconcile.model_deployment.serving import (
    ACTIVE,
    RolloutAction,
    Serving,
    Track,
    new_rollout,
    published_rollout,
    reconcile_unconverged,
    rollout_action,
    rollout_input,
    rollout_pending,
    serving,
    workflow_id,
)
from aios.operator.reconcile.model_deployment.status import (
    card_summary,
    history_entry,
    observed_rollout,
    rollout_conditions,
    serving_conditions,
    serving_status,
    with_history,
)

__all__ = [
    "ACTIVE",
    "CHILD_KINDS",
    "INFERENCE_SERVICES_CRD",
    "KSERVE_KINDS",
    "KSERVE_VERSION",
    "MODEL_DEPLOYMENT",
    "MODEL_MOUNT",
    "SERVED_VERSION",
    "RolloutAction",
    "Serving",
    "Track",
    "card_summary",
    "endpoints",
    "history_entry",
    "kserve_endpoints",
    "mirrored",
    "new_rollout",
    "observed_rollout",
    "published_rollout",
    "reconcile_unconverged",
    "render_kserve",
    "render_raw",
    "rollout_action",
    "rollout_conditions",
    "rollout_input",
    "rollout_pending",
    "server_container",
    "service_name",
    "serving",
    "serving_conditions",
    "serving_status",
    "storage",
    "version_slug",
    "with_history",
    "workflow_id",
]
