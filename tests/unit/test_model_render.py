"""What serves a ModelDeployment, rendered purely: raw Deployments and Services per
version, an InferenceService with KServe, storage for every URI scheme, and what the
operator must do about the rollout workflow."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from aios.api.model_rollout import ModelRollout, rollout_name
from aios.operator.reconcile import model_deployment as md_plan
from aios.operator.reconcile.children import OWNER_UID
from aios.operator.settings import OperatorSettings

NS = "city"
IMAGE = "ghcr.io/aios-dev/aios:test"
SITE = OperatorSettings(kafka_bootstrap="k:9092", temporal_address="t:7233", image=IMAGE)


STABLE = {
    "version": "2024.11.2",
    "model": "pm25-anomaly",
    "storageUri": "s3://city-models/air-quality/pm25-anomaly/2024.11.2",
    "format": "python",
    "http": "http://pm25-anomaly.city.svc:8000",
    "grpc": "pm25-anomaly.city.svc:8001",
}


def rollout(phase: str, weight: int = 0, strategy: str = "canary", **extra: Any) -> dict:
    return {
        "version": "2024.11.3",
        "strategy": strategy,
        "source": {
            "name": "pm25-anomaly",
            "version": "2024.11.3",
            "storageUri": "s3://city-models/air-quality/pm25-anomaly/2024.11.3",
        },
        "workflowId": "rollout/city/pm25-anomaly/2024.11.3",
        "phase": phase,
        "weight": weight,
        "revision": 3,
        **extra,
    }


def by_kind(children: list[dict]) -> dict[tuple[str, str], dict]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def test_the_first_version_is_served_directly_with_everything_a_pod_needs(model_deployment) -> None:
    md = model_deployment()
    plan = md_plan.serving(md)
    assert plan.first and plan.candidate is None
    children = by_kind(md_plan.render_raw(md, replace(SITE, model_mirror="/srv/mirror")))
    assert set(children) == {
        ("Deployment", "pm25-anomaly-2024-11-3"),
        ("Service", "pm25-anomaly-2024-11-3"),
        ("Service", "pm25-anomaly"),
        ("HorizontalPodAutoscaler", "pm25-anomaly"),
    }
    dep = children[("Deployment", "pm25-anomaly-2024-11-3")]
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["tritonserver"]
    assert "--http-address=$(POD_IP)" in container["args"]
    assert "--grpc-address=$(POD_IP)" in container["args"]
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0, "drains before it stops"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["cpu"] == "500m"
    assert pod["volumes"][0]["hostPath"]["path"] == (
        "/srv/mirror/city-models/air-quality/pm25-anomaly/2024.11.3"
    )
    assert "replicas" not in dep["spec"], "the HPA owns the stable's replicas"
    assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aios"
    hpa = children[("HorizontalPodAutoscaler", "pm25-anomaly")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    for child in children.values():
        assert child["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert child["metadata"]["labels"][OWNER_UID] == "u-1"


def test_a_canary_runs_beside_the_stable_and_promotion_only_moves_the_selector(
    model_deployment,
) -> None:
    progressing = model_deployment({"stable": STABLE, "rollout": rollout("Progressing", 25)})
    plan = md_plan.serving(progressing)
    assert plan.stable.version == "2024.11.2" and plan.candidate is not None
    assert (plan.track, plan.weight) == ("canary", 25)
    children = by_kind(md_plan.render_raw(progressing, SITE))
    stable_svc = children[("Service", "pm25-anomaly")]["spec"]["selector"]
    canary_svc = children[("Service", "pm25-anomaly-canary")]["spec"]["selector"]
    assert stable_svc["aios.dev/served-version"] == "2024-11-2"
    assert canary_svc["aios.dev/served-version"] == "2024-11-3"
    assert children[("Deployment", "pm25-anomaly-2024-11-3")]["spec"]["replicas"] == 1
    status = md_plan.serving_status(progressing, plan, NS, False, True, candidate_ready=True)
    assert status["stable"]["http"] == "http://pm25-anomaly-2024-11-2.city.svc:8000"
    assert status["canary"]["grpc"] == "pm25-anomaly-2024-11-3.city.svc:8001"
    assert status["endpoints"]["http"] == "http://pm25-anomaly.city.svc:8000", "users' track"
    own = children[("Service", "pm25-anomaly-2024-11-3")]["spec"]["selector"]
    assert own == canary_svc, "a caller following the split reaches exactly that version"

    promoted = model_deployment({"stable": STABLE, "rollout": rollout("Promoted", 100)})
    after = by_kind(md_plan.render_raw(promoted, SITE))
    assert ("Deployment", "pm25-anomaly-2024-11-2") not in after, "pruned"
    assert ("Service", "pm25-anomaly-2024-11-2") not in after
    assert after[("Service", "pm25-anomaly")]["spec"]["selector"]["aios.dev/served-version"] == (
        "2024-11-3"
    )
    same = after[("Deployment", "pm25-anomaly-2024-11-3")]["spec"]["template"]
    assert same == children[("Deployment", "pm25-anomaly-2024-11-3")]["spec"]["template"], (
        "the promoted version's pods are the canary's: nothing restarts"
    )


@pytest.mark.parametrize("phase", ["RolledBack", "Aborted"])
def test_after_a_rollback_only_the_stable_serves(phase: str, model_deployment) -> None:
    md = model_deployment({"stable": STABLE, "rollout": rollout(phase)})
    plan = md_plan.serving(md)
    assert plan.candidate is None and plan.stable.version == "2024.11.2"
    status = md_plan.serving_status(md, plan, NS, False, True)
    assert status["canary"] is None and status["canaryVersion"] is None
    assert status["activeVersion"] == "2024.11.2"


def test_a_shadow_gets_its_own_service_and_no_weight(model_deployment) -> None:
    md = model_deployment({"stable": STABLE, "rollout": rollout("Progressing", 40, "shadow")})
    plan = md_plan.serving(md)
    assert (plan.track, plan.weight) == ("shadow", 0)
    assert ("Service", "pm25-anomaly-shadow") in by_kind(md_plan.render_raw(md, SITE))
    status = md_plan.serving_status(md, plan, NS, False, True, candidate_ready=True)
    assert status["shadow"]["http"] == "http://pm25-anomaly-2024-11-3.city.svc:8000"
    assert status["shadow"]["ready"] is True
    assert status["canary"] is None and status["canaryWeight"] == 0


def test_the_kserve_runtime_runs_our_model_server_on_the_pod_address(model_deployment) -> None:
    md = model_deployment(runtime="kserve")
    container = md_plan.server_container(md, SITE)
    assert container["command"] == ["python", "-m", "aios.connectors.model_server"]
    assert "--host=$(POD_IP)" in container["args"] and container["image"] == SITE.image


def test_triton_runs_the_sites_triton_image(model_deployment) -> None:
    site = replace(SITE, triton_image="registry.city.example/tritonserver@sha256:" + "0" * 64)
    container = md_plan.server_container(model_deployment(runtime="triton"), site)
    assert container["image"] == site.triton_image and container["command"] == ["tritonserver"]


def test_with_kserve_a_canary_gets_its_own_inference_service_and_callers_split(
    model_deployment,
) -> None:
    """KServe's RawDeployment mode does not split traffic: the canary's InferenceService
    stands beside the stable one and ``status`` gives callers the weight, as in raw mode."""
    md = model_deployment({"stable": STABLE, "rollout": rollout("Progressing", 30)})
    stable, canary = md_plan.render_kserve(md, SITE)
    assert (stable["metadata"]["name"], canary["metadata"]["name"]) == (
        "pm25-anomaly",
        "pm25-anomaly-canary",
    )
    assert stable["apiVersion"] == "serving.kserve.io/v1beta1"
    for isvc, version in ((stable, "2024.11.2"), (canary, "2024.11.3")):
        predictor = isvc["spec"]["predictor"]
        assert "canaryTrafficPercent" not in predictor
        assert predictor["model"]["storageUri"].endswith(f"/{version}")
        assert predictor["model"]["modelFormat"] == {"name": "triton"}
        assert predictor["model"]["runtime"] == "aios-triton"
        assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    status = md_plan.serving_status(md, md_plan.serving(md), NS, True, True, candidate_ready=True)
    assert status["canary"]["http"] == "http://pm25-anomaly-canary-predictor.city.svc:80"
    assert status["stable"]["http"] == "http://pm25-anomaly-predictor.city.svc:80"
    assert status["canaryWeight"] == 30
    (only,) = md_plan.render_kserve(model_deployment({"stable": STABLE}), SITE)
    assert only["spec"]["predictor"]["model"]["storageUri"].endswith("/2024.11.2")


def test_with_kserve_our_model_server_is_the_charts_serving_runtime(model_deployment) -> None:
    md = model_deployment(runtime="kserve")
    (isvc,) = md_plan.render_kserve(md, SITE)
    model = isvc["spec"]["predictor"]["model"]
    assert (model["runtime"], model["modelFormat"]) == ("aios-model-server", {"name": "aios"})
    status = md_plan.serving_status(md, md_plan.serving(md), NS, True, True)
    assert status["endpoints"] == {
        "http": "http://pm25-anomaly-predictor.city.svc:80",
        "grpc": "pm25-anomaly-predictor.city.svc:8001",
    }


@pytest.mark.parametrize(
    ("uri", "volume", "init"),
    [
        ("file:///models/a", {"hostPath": {"path": "/models/a", "type": "Directory"}}, False),
        ("pvc://claim/models/a", {"persistentVolumeClaim": {"claimName": "claim"}}, False),
        ("s3://bucket/a", {"emptyDir": {}}, True),
        ("https://example.com/a.tgz", {"emptyDir": {}}, True),
    ],
)
def test_every_storage_scheme_lands_at_the_model_mount(uri: str, volume: dict, init: bool) -> None:
    found, mount, initializers = md_plan.storage(uri)
    assert {k: v for k, v in found.items() if k != "name"} == volume
    assert mount["mountPath"] == md_plan.MODEL_MOUNT
    assert bool(initializers) == init
    if init:
        assert initializers[0]["args"] == [uri, md_plan.MODEL_MOUNT]
    if uri.startswith("pvc"):
        assert mount["subPath"] == "models/a"


def test_the_site_mirror_serves_bucket_uris_locally() -> None:
    assert md_plan.mirrored("gs://b/k/1", "/m/") == "file:///m/b/k/1"
    assert md_plan.mirrored("s3://b/k", None) == "s3://b/k"
    assert md_plan.mirrored("file:///x", "/m") == "file:///x"


def test_version_slugs_are_dns_labels_and_distinct() -> None:
    assert md_plan.version_slug("2024.11.2") == "2024-11-2"
    odd = md_plan.version_slug("1.0+Build_7")
    assert odd != md_plan.version_slug("1.0-build-7")
    long = md_plan.version_slug("2024.11.2-rc.1+" + "x" * 60)
    assert len(long) <= 20 and long.replace("-", "").isalnum()


def test_the_operator_starts_a_rollout_once_and_leaves_decisions_to_approvals(
    model_deployment,
) -> None:
    first = model_deployment()
    assert md_plan.rollout_action(first) == md_plan.RolloutAction(), "nothing to protect yet"
    new_version = model_deployment({"stable": STABLE})
    assert md_plan.rollout_action(new_version) == md_plan.RolloutAction(start=True, record=True)
    running = model_deployment({"stable": STABLE, "rollout": rollout("Progressing", 25)})
    assert md_plan.rollout_action(running) == md_plan.RolloutAction(start=True)
    approval = {
        "name": "pm25-anomaly-x7",
        "version": "2024.11.3",
        "decision": "approved",
        "by": "alice",
        "at": "2024-11-20T10:00:00Z",
    }
    waiting = model_deployment(
        {"stable": STABLE, "rollout": rollout("AwaitingApproval", approval=approval)}
    )
    assert md_plan.rollout_action(waiting) == md_plan.RolloutAction(start=True), (
        "a recorded decision is the workflow's own: nothing to forward"
    )
    ended = model_deployment({"stable": STABLE, "rollout": rollout("RolledBack")})
    assert md_plan.rollout_action(ended) == md_plan.RolloutAction(), "no automatic retry"
    superseded = model_deployment(
        {"stable": STABLE, "rollout": rollout("Progressing", 25)},
        model={"name": "pm25-anomaly", "version": "2024.12.0", "storageUri": "s3://b/m/2024.12.0"},
    )
    assert "2024.12.0" in (md_plan.rollout_action(superseded).abort or "")
    assert md_plan.workflow_id(NS, "pm25-anomaly", "2024.11.3") == (
        "rollout/city/pm25-anomaly/2024.11.3"
    )


def test_conditions_tell_what_serves_and_why(model_deployment) -> None:
    rolled_back = model_deployment(
        {"stable": STABLE, "rollout": rollout("RolledBack", message="step 1 analysis failed")}
    )
    plan = md_plan.serving(rolled_back)
    conditions = {c.type: c for c in md_plan.serving_conditions(rolled_back, plan, True, "")}
    conditions |= {c.type: c for c in md_plan.rollout_conditions(rolled_back)}
    assert conditions["Ready"].status == "True"
    assert conditions["Degraded"].status == "True"
    assert "2024.11.3 is not served (step 1 analysis failed)" in conditions["Degraded"].message
    assert conditions["RolledBack"].status == "True"
    assert conditions["Progressing"].status == "False"

    broken = model_deployment()
    plan = md_plan.serving(broken)
    down = {c.type: c for c in md_plan.serving_conditions(broken, plan, False, "UNAVAILABLE: x")}
    assert down["Ready"].status == "False" and down["Degraded"].reason == "ModelNotLoaded"
    assert "UNAVAILABLE: x" in down["Degraded"].message


def test_history_keeps_the_model_card_and_the_approver(model_deployment) -> None:
    card = {"owner": "team-air-quality", "intendedUse": "alerts", "metrics": {"auc": 0.9}}
    approval = {
        "version": "2024.11.3",
        "decision": "approved",
        "by": "alice",
        "at": "2024-11-20T10:00:00Z",
    }
    md = model_deployment(
        {"stable": STABLE, "rollout": rollout("Promoted", 100, approval=approval)},
        modelCard=card,
    )
    assert md.status is not None and md.status.rollout is not None
    entry = md_plan.history_entry(md, md.status.rollout, "2024-11-20T11:00:00Z")
    assert entry["outcome"] == "promoted" and entry["approvedBy"] == "alice"
    assert entry["modelCard"]["owner"] == "team-air-quality"
    history = md_plan.with_history([{"version": str(i)} for i in range(20)], entry)
    assert len(history) == 20 and history[-1] is entry
    assert (
        md_plan.card_summary(md.spec.model_card) == "team-air-quality · auc=0.9 · no personal data"
    )


def test_a_served_rollout_step_is_marked_once_and_a_finished_rollout_enters_the_history_once(
    model_deployment,
) -> None:
    now = "2024-11-20T11:00:00Z"
    stepping = model_deployment({"stable": STABLE, "rollout": rollout("Progressing", 20)})
    assert md_plan.rollout_pending(stepping.model_dump(by_alias=True))
    assert md_plan.observed_rollout(stepping, now) == {"observedRolloutRevision": 3}

    served = model_deployment(
        {"stable": STABLE, "rollout": rollout("Progressing", 20), "observedRolloutRevision": 3}
    )
    assert not md_plan.rollout_pending(served.model_dump(by_alias=True))
    assert md_plan.observed_rollout(served, now) == {}

    promoted = model_deployment({"stable": STABLE, "rollout": rollout("Promoted", 100)})
    fields = md_plan.observed_rollout(promoted, now)
    assert [(h["version"], h["outcome"], h["promotedAt"]) for h in fields["history"]] == [
        ("2024.11.3", "promoted", now)
    ]
    again = model_deployment(
        {"stable": STABLE, "rollout": rollout("Promoted", 100), "history": fields["history"]}
    )
    assert "history" not in md_plan.observed_rollout(again, now), "not twice"


def test_a_new_version_not_yet_answering_is_probed_again_until_it_answers() -> None:
    """The tick reconciles a Ready ModelDeployment again while its canary or shadow has not
    answered the operator's probe (a Service routes to a ready pod a moment later), and
    leaves it alone once it has, or when there is none."""
    ready = {"type": "Ready", "status": "True"}
    meta = {"generation": 2}

    def body(**status: Any) -> dict[str, Any]:
        return {
            "metadata": meta,
            "status": {"observedGeneration": 2, "conditions": [ready], **status},
        }

    assert md_plan.reconcile_unconverged(body(canary={"version": "2", "ready": False}))
    assert md_plan.reconcile_unconverged(body(shadow={"version": "2", "ready": False}))
    assert not md_plan.reconcile_unconverged(body(canary={"version": "2", "ready": True}))
    assert not md_plan.reconcile_unconverged(body(canary=None, shadow=None))
    failing = body(canary=None)
    failing["status"]["conditions"] = [{**ready, "status": "False"}]
    assert md_plan.reconcile_unconverged(failing), "not Ready: as every kind"


def published(record: dict, owner_uid: str = "u-1", workflow_id: str | None = None) -> ModelRollout:
    """The ModelRollout the rollout workflow wrote, holding ``record``."""
    return ModelRollout.model_validate(
        {
            "metadata": {
                "name": rollout_name("pm25-anomaly", record["version"]),
                "namespace": NS,
                "ownerReferences": [{"kind": "ModelDeployment", "uid": owner_uid}],
            },
            "spec": {
                "modelDeployment": "pm25-anomaly",
                "version": record["version"],
                "workflowId": workflow_id or record["workflowId"],
            },
            "status": {"rollout": record, "sequence": 4},
        }
    )


def test_the_status_mirrors_only_the_current_rollouts_latest_publication(model_deployment) -> None:
    md = model_deployment({"stable": STABLE, "rollout": rollout("Progressing", 20)})
    step = rollout("Progressing", 50, revision=4)
    found = md_plan.published_rollout(md, published(step))
    assert found is not None and (found.weight, found.revision) == (50, 4)
    assert md_plan.published_rollout(md, None) is None, "nothing published yet"
    same = rollout("Progressing", 20)
    assert md_plan.published_rollout(md, published(same)) is None, "nothing new: no write"
    assert md_plan.published_rollout(md, published(step, owner_uid="u-0")) is None, (
        "a namesake's rollout, left from a deleted ModelDeployment"
    )
    older = {**step, "workflowId": "rollout/city/pm25-anomaly/2024.11.1"}
    assert md_plan.published_rollout(md, published(older)) is None, "another rollout's"
    assert md_plan.published_rollout(md, published(step, workflow_id="other")) is None
    fresh = model_deployment({"stable": STABLE})
    assert md_plan.published_rollout(fresh, published(step)) is None, "no rollout recorded"


def test_the_rollout_workflow_starts_with_the_spec_it_follows(model_deployment) -> None:
    md = model_deployment(
        {"stable": STABLE},
        rollout={
            "strategy": "canary",
            "steps": [{"weight": 10, "pauseSeconds": 30}, {"weight": 100, "pauseSeconds": 0}],
            "progressDeadlineSeconds": 120,
            "analysis": {"maxErrorRate": 0.02, "minRequests": 40, "minDecisionAgreement": 0.9},
        },
        approval={"required": True, "approvers": ["user:alice"]},
    )
    started = md_plan.rollout_input(md, md_plan.new_rollout(md, NS), NS)
    assert (started.namespace, started.name, started.version) == (NS, "pm25-anomaly", "2024.11.3")
    assert started.workflow_id == "rollout/city/pm25-anomaly/2024.11.3"
    assert [(s.weight, s.pause_seconds) for s in started.steps] == [(10, 30), (100, 0)]
    assert started.ready_timeout_seconds == 120
    assert (started.gates.max_error_rate, started.gates.min_requests) == (0.02, 40)
    assert started.gates.min_decision_agreement == 0.9
    assert started.approval_required and started.approvers == ["user:alice"]
    assert started.source == md.spec.model
