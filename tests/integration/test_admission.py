"""The validating webhook against the real API server: kubectl apply is denied with the
policy's message, warned, or only counted; decisions land in the audit log; the webhook
covers aios kinds only and is served with the operator's own certificate."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from typing import Any

import yaml
from test_operator import wait_for
from test_policy_operator import conditions, model_deployment, policy

from aios.connectors import audit
from aios.stack.site import Site

GPU_RULE = """package pilot

violation contains msg if {
  input.kind == "ModelDeployment"
  input.object.spec.resources.gpu > 0
  msg := sprintf("no GPU ModelDeployments in namespace %s", [input.namespace])
}
"""


def enforce(kubectl, namespace: str, name: str, enforcement: str) -> None:
    manifest = policy(
        name, rego=GPU_RULE, enforcement=enforcement, scope={"kinds": ["ModelDeployment"]}
    )
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    wait_for(lambda: conditions(kubectl, namespace, name).get("Ready", {}).get("status") == "True")


def apply(kubectl, namespace: str, manifest: dict[str, Any]):
    return kubectl.run("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def admission_record(site: Site, subject: str, timeout: float = 30) -> audit.AuditRecord:
    """The chained admission record of ``subject`` (the operator's appender chains it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in audit.read_log(site.endpoints.kafka_bootstrap):
            if record.kind == "admission" and record.subject == subject:
                return record
        time.sleep(0.5)
    raise AssertionError(f"no admission record for {subject} in {timeout}s")


def test_deny_rejects_kubectl_apply_with_the_policys_message(
    kubectl, operator, namespace: str, site: Site
) -> None:
    enforce(kubectl, namespace, "no-gpu", "deny")
    rejected = apply(kubectl, namespace, model_deployment("big", gpu=1))
    assert rejected.returncode != 0
    assert 'admission webhook "policy-modeldeployment.aios.dev" denied the request' in (
        rejected.stderr
    )
    assert f"{namespace}/no-gpu: no GPU ModelDeployments in namespace {namespace}" in (
        rejected.stderr
    )
    assert kubectl.run("get", "modeldeployment", "big", "-n", namespace).returncode != 0

    admitted = apply(kubectl, namespace, model_deployment("small", gpu=0))
    assert admitted.returncode == 0, admitted.stderr

    record = admission_record(site, f"ModelDeployment {namespace}/big")
    assert record.details["outcome"] == "denied"
    assert record.details["denials"] == [
        f"{namespace}/no-gpu: no GPU ModelDeployments in namespace {namespace}"
    ]
    assert record.actor == "aios-admin" and record.policy_decision_id
    assert audit.verify(audit.read_raw_log(site.endpoints.kafka_bootstrap)).ok


def test_a_metadata_change_of_an_object_that_now_violates_is_not_blocked(
    kubectl, operator, namespace: str
) -> None:
    assert apply(kubectl, namespace, model_deployment("legacy", gpu=2)).returncode == 0
    enforce(kubectl, namespace, "no-gpu", "deny")
    kubectl("annotate", "modeldeployment", "legacy", "-n", namespace, "aios.dev/note=kept")
    changed = model_deployment("legacy", gpu=2)
    changed["spec"]["model"]["version"] = "2"
    assert apply(kubectl, namespace, changed).returncode != 0, "a spec change is reviewed"
    kubectl("delete", "modeldeployment", "legacy", "-n", namespace, "--timeout=30s")


def test_warn_lets_apply_through_and_kubectl_prints_the_warning(
    kubectl, operator, namespace: str, site: Site
) -> None:
    enforce(kubectl, namespace, "gpu-warning", "warn")
    admitted = apply(kubectl, namespace, model_deployment("big", gpu=1))
    assert admitted.returncode == 0, admitted.stderr
    assert (
        f"Warning: {namespace}/gpu-warning: no GPU ModelDeployments in namespace {namespace}"
        in admitted.stderr
    )
    record = admission_record(site, f"ModelDeployment {namespace}/big")
    assert record.details["outcome"] == "allowed" and len(record.details["warnings"]) == 1


def test_dryrun_only_counts(kubectl, operator, namespace: str, site: Site) -> None:
    enforce(kubectl, namespace, "gpu-count", "dryrun")
    admitted = apply(kubectl, namespace, model_deployment("big", gpu=4))
    assert admitted.returncode == 0, admitted.stderr
    assert "Warning" not in admitted.stderr
    record = admission_record(site, f"ModelDeployment {namespace}/big")
    assert record.details["outcome"] == "allowed"
    assert record.details["dryrun"] == [
        f"{namespace}/gpu-count: no GPU ModelDeployments in namespace {namespace}"
    ]
    status = wait_for(
        lambda: (
            (kubectl.json("get", "policy", "gpu-count", "-n", namespace).get("status") or {}).get(
                "violationCount"
            )
            == 1
        ),
        timeout=60,
    )
    assert status


def test_a_server_side_dry_run_request_leaves_no_audit_record(
    kubectl, operator, namespace: str, site: Site
) -> None:
    enforce(kubectl, namespace, "no-gpu", "deny")
    result = kubectl.run(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(model_deployment("trial", gpu=1)),
    )
    assert result.returncode != 0 and "no GPU ModelDeployments" in result.stderr
    apply(kubectl, namespace, model_deployment("after", gpu=0))
    admission_record(site, f"ModelDeployment {namespace}/after")  # chained after the trial
    subjects = [r.subject for r in audit.read_log(site.endpoints.kafka_bootstrap)]
    assert f"ModelDeployment {namespace}/trial" not in subjects


def test_the_webhook_covers_aios_kinds_only_with_the_operators_certificate(
    kubectl, operator
) -> None:
    configuration = wait_for(
        lambda: (
            (
                c := kubectl.run("get", "validatingwebhookconfiguration", "aios.dev", "-o", "json")
            ).returncode
            == 0
            and json.loads(c.stdout)
        )
    )
    webhooks = configuration["webhooks"]
    resources = {w["name"]: [r for rule in w["rules"] for r in rule["resources"]] for w in webhooks}
    assert resources == {
        "policy-modeldeployment.aios.dev": ["modeldeployments"],
        "policy-automationintent.aios.dev": ["automationintents"],
        "policy-edgegateway.aios.dev": ["edgegateways"],
        "validate-approval.aios.dev": ["approvals"],
        "validate-manualaction.aios.dev": ["manualactions"],
        "validate-modeldeployment-status.aios.dev": ["modeldeployments/status"],
        "validate-modelrollout-status.aios.dev": ["modelrollouts/status"],
    }
    operations = {"CREATE", "UPDATE"}
    approvals = {"validate-approval.aios.dev": {"CREATE"}}
    approvals["validate-manualaction.aios.dev"] = {"CREATE"}
    approvals["validate-modeldeployment-status.aios.dev"] = {"UPDATE"}
    approvals["validate-modelrollout-status.aios.dev"] = {"UPDATE"}
    for webhook in webhooks:
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["sideEffects"] == "NoneOnDryRun"
        wanted = approvals.get(webhook["name"], operations)
        assert all(rule["apiGroups"] == ["aios.dev"] for rule in webhook["rules"])
        assert all(set(rule["operations"]) == wanted for rule in webhook["rules"])

    client = webhooks[0]["clientConfig"]
    service = client["service"]  # the API server dials the operator's Service, as in a cluster
    assert (service["namespace"], service["port"]) == (operator, 443)
    host = f"{service['name']}.{service['namespace']}.svc"
    address = kubectl.json("get", "service", service["name"], "-n", operator)["spec"]["clusterIP"]
    context = ssl.create_default_context(cadata=base64.b64decode(client["caBundle"]).decode())
    with (
        socket.create_connection((address, 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        served = tls.getpeercert()
    assert ("DNS", host) in served["subjectAltName"]
    secret = kubectl.json("get", "secret", "aios-webhook-ca", "-n", operator)
    assert client["caBundle"] == secret["data"]["tls.crt"], "issued under the chart's CA"
