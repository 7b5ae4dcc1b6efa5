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


RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-configmaps}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads-configmaps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps}
subjects: [{kind: ServiceAccount, name: reader}]
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
  labels: {app.kubernetes.io/part-of: aios}
spec:
  serviceAccountName: reader
  containers:
  - name: reader
    image: python:3.11
    command: [python, -c]
    args:
    - |
      import time
      from kubernetes import client, config
      api = client.CoreV1Api(config.new_client_from_config())
      names = [c.metadata.name for c in api.list_namespaced_config_map("$(NS)").items]
      try:
          api.list_namespaced_secret("$(NS)")
          secrets = "allowed"
      except client.ApiException as error:
          secrets = str(error.status)
      print("configmaps", sorted(names), "secrets", secrets, flush=True)
      time.sleep(3600)
    env:
    - name: NS
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
"""


def test_a_pod_talks_to_the_api_server_as_its_service_account(kubectl, pods, namespace) -> None:
    kubectl("create", "configmap", "visible", "-n", namespace)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=RBAC)
    log = pods.directory / f"{namespace}_reader" / "reader.log"
    deadline, lines = time.monotonic() + 60, []
    while time.monotonic() < deadline and not lines:
        text = log.read_text() if log.exists() else ""
        lines = [x for x in text.splitlines() if x.startswith("configmaps [")]
        time.sleep(0.3)
    assert lines, f"the pod printed nothing; its log:\n{log.read_text()}"
    line = lines[-1]
    assert "'visible'" in line, line
    assert line.endswith("secrets 403"), "RBAC applies: the account may not read secrets"
