"""Whether a model answers at an endpoint, and why not, asked of the pods behind it.

Two calls of the V2 / Open Inference Protocol's HTTP side: a model's readiness, and
Triton's repository index, which names a load failure's cause. They carry no tensors, so
they need neither numpy nor tritonclient: the operator probes every ModelDeployment with
them and would otherwise carry about 20 MB it never uses.

A Service routes to ready pods only, so when a version cannot load its model the Service
has no one to answer and says only "connection refused". Its EndpointSlices still list
every pod it selects, ready or not: the runtime in each of them can say what went wrong.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from kubernetes import client
from kubernetes.client.exceptions import ApiException

NO_ANSWER = "no answer from"
"""How a reason starts when the endpoint itself did not answer."""


def base_url(url: str) -> str:
    """``host:port`` or ``http://host:port[/]`` → ``http://host:port``."""
    return (url if "://" in url else f"http://{url}").rstrip("/")


def _session(timeout: float) -> aiohttp.ClientSession:
    """A session for one short call: ``timeout`` bounds it from connect to last byte."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


async def ready(url: str, model: str, version: str = "", timeout: float = 2.0) -> bool:
    """Whether the endpoint answers and ``model`` (``version``) is loaded; never raises."""
    path = f"/v2/models/{quote(model, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    try:
        async with (
            _session(timeout) as http,
            http.get(f"{base_url(url)}{path}/ready") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def why_not_ready(url: str, model: str, timeout: float = 2.0) -> str:
    """Why ``model`` is not ready at ``url``, in words for a status message; never raises.
    Triton's repository index names a load failure's cause."""
    try:
        async with (
            _session(timeout) as http,
            http.post(f"{base_url(url)}/v2/repository/index", data=b"") as response,
        ):
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return f"{NO_ANSWER} {url}: {type(error).__name__}: {error}".strip()
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    if status != 200 or not isinstance(body, list):
        said = body.get("error") if isinstance(body, dict) else text.strip()[:200]
        return f"{model} at {url} is not ready ({said or f'HTTP {status}'})"
    for entry in body:
        if isinstance(entry, dict) and entry.get("name") == model:
            state = entry.get("state", "UNKNOWN")
            reason = (entry.get("reason") or "").split("\n")[0]  # not the traceback
            return f"{model} is {state}" + (f": {reason}" if reason else "")
    return f"{model} is not in the model repository at {url}"


def service_backends(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    """The addresses of every pod the Service selects, ready or not."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sorted(
        {address for s in slices.items for e in s.endpoints or [] for address in e.addresses}
    )


def service_of(service_url: str) -> tuple[str, str]:
    """(namespace, name) of the Service ``http://name.ns.svc:port`` names."""
    name, namespace = (urlsplit(service_url).hostname or "").split(".")[:2]
    return namespace, name


def cluster_address(api: client.ApiClient, service_url: str) -> str | None:
    """``service_url`` (``http://name.ns.svc:port``) at its Service's cluster IP, which the
    name resolves to (the URL as given for a Service without one: an ExternalName, as
    Knative makes); None while the Service does not exist. The name is not asked: a Service
    is often new when its model is probed, and a name asked before the cluster's DNS has
    seen it is remembered as missing (30 s with kubeadm's CoreDNS) by every pod asking."""
    namespace, name = service_of(service_url)
    try:
        service = client.CoreV1Api(api).read_namespaced_service(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return at_cluster_ip(service_url, service.spec.cluster_ip if service.spec else None)


def at_cluster_ip(service_url: str, cluster_ip: str | None) -> str:
    """``service_url`` at its Service's ``cluster_ip``; as given for a Service without one
    (an ExternalName, or "None": headless)."""
    if not cluster_ip or cluster_ip == "None":
        return service_url
    return f"http://{cluster_ip}:{urlsplit(service_url).port}"


async def explain(api: client.ApiClient, service_url: str, address: str, model: str) -> str:
    """Why ``model`` does not answer at ``service_url`` (``http://name.ns.svc:port``): in the
    words of a pod behind it that has something to say, else the Service's own answer,
    asked at ``address`` (its ``cluster_address``)."""
    namespace, name = service_of(service_url)
    reason = await why_not_ready(address, model)
    pods = await asyncio.to_thread(service_backends, api, namespace, name)
    if not pods:
        return f"{reason} (no pod behind the Service {namespace}/{name})"
    port = urlsplit(service_url).port
    for pod in pods:
        answer = await why_not_ready(f"http://{pod}:{port}", model)
        if not answer.startswith(NO_ANSWER):
            return answer
    return reason
