"""The local kubelet runs what a pod template says, and Services resolve to it."""

from __future__ import annotations

import contextlib
import time

import httpx
import yaml

from aios.connectors import endpoints

MANIFESTS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: site-content}
data: {index.html: "hello from a ConfigMap"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, app.kubernetes.io/part-of: aios}
    spec:
      containers:
      - name: web
        image: python:3.11
        command: [python, -m, http.server]
        args: [--bind, $(POD_IP), --directory, /srv/www, "8000"]
        env:
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        volumeMounts: [{name: content, mountPath: /srv/www}]
      volumes: [{name: content, configMap: {name: site-content}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8000}]
"""


def test_a_pod_runs_as_a_host_process_behind_its_service(
    kubectl, pods, namespace, monkeypatch
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=MANIFESTS)
    monkeypatch.setenv(endpoints.SERVICE_MAP_ENV, str(pods.service_map))
    url = f"http://web.{namespace}.svc:80/index.html"
    deadline, body = time.monotonic() + 60, None
    while time.monotonic() < deadline and body is None:
        resolved = endpoints.resolve_url(url)
        if resolved != url:
            with contextlib.suppress(httpx.TransportError):
                body = httpx.get(resolved, timeout=2).text
        time.sleep(0.3)
    assert body == "hello from a ConfigMap"
    assert endpoints.resolve_url(url).startswith("http://127.42.")

    kubectl("delete", "deployment", "web", "-n", namespace, "--wait=true")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and endpoints.resolve_url(url) != url:
        time.sleep(0.3)
    assert endpoints.resolve_url(url) == url, "the Service has no backend once the pod is gone"


def test_a_pod_that_cannot_run_here_is_reported(kubectl, pods, namespace) -> None:
    pod = yaml.safe_load(MANIFESTS.split("---")[1])["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "no-config", **pod["metadata"]},
        "spec": pod["spec"],
    }
    pod["spec"]["volumes"][0]["configMap"]["name"] = "absent"
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(pod))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("absent" in v for v in pods.failures.values()):
        time.sleep(0.3)
    assert any("absent" in reason for reason in pods.failures.values())
