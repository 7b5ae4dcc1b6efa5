"""How the site configures KServe: its own published configuration, with RawDeployment
and no Istio, and its webhooks pointed at the controller on the node."""

from __future__ import annotations

import base64
import json

from aios.stack.site import kserve

PUBLISHED_CONFIG = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
    "data": {
        "_example": "documentation only",
        "deploy": json.dumps({"defaultDeploymentMode": "Serverless"}),
        "ingress": json.dumps({"ingressDomain": "example.com", "urlScheme": "http"}),
        "storageInitializer": json.dumps({"image": "kserve/storage-initializer:latest"}),
    },
}

PUBLISHED_HOOKS = [
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "inferenceservice.serving.kserve.io", "creationTimestamp": None},
        "webhooks": [
            {
                "name": "inferenceservice.kserve-webhook-server.validator",
                "clientConfig": {
                    "service": {
                        "name": "$(webhookServiceName)",
                        "namespace": "$(kserveNamespace)",
                        "path": "/validate-serving-kserve-io-v1beta1-inferenceservice",
                    }
                },
                "failurePolicy": "Fail",
            }
        ],
    }
]


def test_the_site_runs_kserves_own_configuration_in_raw_deployment_mode() -> None:
    config = kserve.site_config(PUBLISHED_CONFIG)
    assert json.loads(config["data"]["deploy"]) == {"defaultDeploymentMode": "RawDeployment"}
    ingress = json.loads(config["data"]["ingress"])
    assert ingress["disableIstioVirtualHost"] and ingress["disableIngressCreation"]
    assert ingress["urlScheme"] == "http", "the rest is KServe's own"
    assert ingress["domainTemplate"] == "{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}"
    assert ingress["ingressDomain"] == "svc.cluster.local"
    assert config["data"]["storageInitializer"] == PUBLISHED_CONFIG["data"]["storageInitializer"]
    assert "_example" not in config["data"]
    assert PUBLISHED_CONFIG["data"]["deploy"] == json.dumps({"defaultDeploymentMode": "Serverless"})


def test_kserves_webhooks_call_its_service_verified_by_the_sites_ca() -> None:
    (hooks,) = kserve.webhooks(PUBLISHED_HOOKS, b"CA PEM")
    (hook,) = hooks["webhooks"]
    assert hook["clientConfig"] == {
        "service": {
            "name": kserve.WEBHOOK_SERVICE,
            "namespace": kserve.NAMESPACE,
            "path": "/validate-serving-kserve-io-v1beta1-inferenceservice",
        },
        "caBundle": base64.b64encode(b"CA PEM").decode(),
    }
    assert hook["failurePolicy"] == "Fail" and hooks["metadata"] == {
        "name": "inferenceservice.serving.kserve.io"
    }


def test_the_webhook_service_leads_to_the_controller_on_the_node() -> None:
    _, service, endpoints = kserve.registration("10.201.0.2")
    assert service["spec"]["ports"][0]["targetPort"] == kserve.WEBHOOK_PORT
    assert "selector" not in service["spec"]
    assert endpoints["endpoints"][0]["addresses"] == ["10.201.0.2"]
    assert (
        endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == service["metadata"]["name"]
    )


def test_s3_models_are_fetched_by_kserves_storage_library_from_the_sites_object_store() -> None:
    found = kserve.storage_container("ghcr.io/aios-dev/aios@sha256:ab", "http://10.201.0.2:9000")
    spec = found["spec"]
    assert (found["kind"], spec["workloadType"]) == ("ClusterStorageContainer", "initContainer")
    assert spec["supportedUriFormats"] == [{"prefix": "s3://"}]
    container = spec["container"]
    assert container["image"] == "ghcr.io/aios-dev/aios@sha256:ab"
    assert container["command"][-1] == "aios.connectors.storage_initializer"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"AWS_ENDPOINT_URL": "http://10.201.0.2:9000", "awsAnonymousCredential": "true"}
