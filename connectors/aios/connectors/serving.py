"""Why a model server's Service does not answer, asked of the pods behind it.

A Service routes to ready pods only, so when a version cannot load its model the Service
has no one to answer and says only "connection refused". Its EndpointSlices still list
every pod it selects, ready or not: the runtime in each of them can say what went wrong
(Triton's repository index names a load failure's cause).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from kubernetes import client

from aios.connectors.inference import InferenceClient


def service_backends(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    """The addresses of every pod the Service selects, ready or not."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sorted(
        {address for s in slices.items for e in s.endpoints or [] for address in e.addresses}
    )


async def explain(api: client.ApiClient, service_url: str, model: str) -> str:
    """Why ``model`` does not answer at ``service_url`` (``http://name.ns.svc:port``): in the
    words of a pod behind it that has something to say, else the Service's own answer."""
    parts = urlsplit(service_url)
    name, namespace = (parts.hostname or "").split(".")[:2]
    async with InferenceClient(service_url, "http") as probe:
        reason = await probe.explain(model)
    pods = await asyncio.to_thread(service_backends, api, namespace, name)
    if not pods:
        return f"{reason} (no pod behind the Service {namespace}/{name})"
    for address in pods:
        async with InferenceClient(f"http://{address}:{parts.port}", "http") as pod:
            answer = await pod.explain(model)
        if not answer.startswith("no answer from"):
            return answer
    return reason
