"""The site's node is a real one: the kubelet runs containers from the images built here,
with their limits as cgroups, their probes, logs, exec and restarts; pods resolve Service
names through the cluster's DNS, reach the API server as their ServiceAccount, and the
host reaches Services through the node."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support import cluster_url, container_pids, restarts, running_pod, wait_for

from aios.stack.components import versions
from aios.stack.node import NODE_NAME

WEB = """
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
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: IMAGE
        command: [python3, -m, http.server]
        args: [--directory, /srv/www, "8000"]
        readinessProbe: {httpGet: {path: /index.html, port: 8000}, periodSeconds: 1}
        resources: {requests: {memory: 32Mi}, limits: {memory: 96Mi}}
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


@pytest.fixture
def web(kubectl, namespace, site) -> dict:
    """The web pod, ready, and its Service programmed: kube-proxy has its endpoint (a
    Service whose endpoint is not programmed yet refuses connections)."""
    image = site.images["aios"].pinned_reference
    kubectl("apply", "-n", namespace, "-f", "-", stdin=WEB.replace("IMAGE", image))
    pod = wait_for(lambda: running_pod(kubectl, namespace, "app=web"), what="web ready")
    url = cluster_url(kubectl, f"http://web.{namespace}.svc:80/index.html")
    wait_for(lambda: answers(url), what="the web Service answers")
    return pod


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_node_is_a_ready_kubelet_of_the_pinned_version_on_containerd(kubectl) -> None:
    node = kubectl.json("get", "node", NODE_NAME)
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == versions()["KUBERNETES_VERSION"]
    assert info["containerRuntimeVersion"] == f"containerd://{versions()['CONTAINERD_VERSION'][1:]}"
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions.pop("Ready") == "True" and not node["spec"].get("taints")
    assert set(conditions.values()) == {"False"}, f"no pressure on the node: {conditions}"


def test_the_node_evicts_nothing_for_the_shared_machines_memory_or_disk(kubectl) -> None:
    """No hard eviction threshold (``node_config``): the kubelet holds back none of the
    machine's memory or disk from the pods, so another tenant filling the disk cannot evict
    the chart's pods or taint the node."""
    status = kubectl.json("get", "node", NODE_NAME)["status"]
    for resource in ("memory", "ephemeral-storage"):
        assert status["allocatable"][resource] == status["capacity"][resource], resource


def test_a_pod_serves_its_configmap_behind_a_service_the_host_reaches(
    kubectl, namespace, web, site
) -> None:
    assert web["status"]["containerStatuses"][0]["imageID"].endswith(site.images["aios"].digest), (
        "the pod runs the image built here, by digest"
    )
    url = cluster_url(kubectl, f"http://web.{namespace}.svc:80/index.html")
    assert httpx.get(url, timeout=5).text == "hello from a ConfigMap"


def test_pods_resolve_service_names_and_reach_the_api_server_as_their_account(
    kubectl, namespace, web
) -> None:
    """From inside the pod: cluster DNS for a Service, then the API server through the
    ``kubernetes`` Service with the mounted ServiceAccount token (allowed to read nothing
    but discovery, so a 403 on pods proves who it is)."""
    script = (
        "import json, ssl, urllib.request, urllib.error\n"
        "body = urllib.request.urlopen('http://web/index.html', timeout=5).read().decode()\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "token = open(sa + '/token').read()\n"
        "def get(path):\n"
        "    request = urllib.request.Request('https://kubernetes.default.svc' + path,\n"
        "        headers={'Authorization': 'Bearer ' + token})\n"
        "    try:\n"
        "        return urllib.request.urlopen(request, context=ctx, timeout=5).status\n"
        "    except urllib.error.HTTPError as error:\n"
        "        return error.code\n"
        "answer = {'body': body, 'version': get('/version'), 'pods': get('/api/v1/pods')}\n"
        "print(json.dumps(answer))\n"
    )
    out = kubectl("exec", "-n", namespace, web["metadata"]["name"], "--", "python3", "-c", script)
    answer = json.loads(out)
    assert answer == {"body": "hello from a ConfigMap", "version": 200, "pods": 403}


def test_limits_are_cgroups_and_the_kubelet_reports_usage_below_them(
    kubectl, namespace, web, site
) -> None:
    pids = container_pids(site, web, "web")
    assert pids, "the container's processes are in the node's pod cgroup"
    memory = Path(f"/proc/{pids[0]}/cgroup").read_text()
    path = next(line.split(":", 2)[2] for line in memory.splitlines() if ":memory:" in line)
    limit = Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text()
    assert int(limit) == 96 * 2**20
    summary = json.loads(kubectl("get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary"))
    pod = next(p for p in summary["pods"] if p["podRef"]["name"] == web["metadata"]["name"])
    used = pod["containers"][0]["memory"]["workingSetBytes"]
    assert 0 < used < 96 * 2**20


def last_terminated(pod: dict, container: str) -> dict | None:
    """How the container's previous run ended, once the kubelet has recorded it."""
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
    ended = (status.get("lastState") or {}).get("terminated") or {}
    return ended if ended.get("containerID") else None


def test_a_crashed_container_is_restarted_and_its_logs_kept(kubectl, namespace, web, site) -> None:
    import os
    import signal

    name = web["metadata"]["name"]
    httpx.get(cluster_url(kubectl, f"http://web.{namespace}.svc:80/index.html"), timeout=5)
    (crashed,) = [s["containerID"] for s in web["status"]["containerStatuses"]]
    for pid in container_pids(site, web, "web"):
        os.kill(pid, signal.SIGKILL)
    again = wait_for(
        lambda: (p := running_pod(kubectl, namespace, "app=web")) and restarts(p, "web") and p,
        what="the kubelet restarted the container",
    )
    assert again["metadata"]["uid"] == web["metadata"]["uid"]
    # The restart count can reach the API before the kubelet has recorded which container
    # ended (lastState), and `logs --previous` asks the kubelet for exactly that one.
    ended = wait_for(
        lambda: last_terminated(kubectl.json("get", "pod", name, "-n", namespace), "web"),
        what="the kubelet recorded the crashed container",
    )
    assert ended["containerID"] == crashed and ended["exitCode"] == 137, ended
    previous = kubectl("logs", "-n", namespace, name, "--previous")
    assert "GET /index.html" in previous, "the crashed container's log is kept"
