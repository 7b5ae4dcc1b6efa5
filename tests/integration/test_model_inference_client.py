"""The V2 inference client against the site's real Triton, over HTTP and gRPC alike."""

from __future__ import annotations

import json
import socket
import textwrap

import httpx
import numpy as np
import pytest

from aios.connectors import serving
from aios.connectors.inference import InferenceClient, InferenceRejected, InferenceUnavailable
from aios.connectors.kube import api_client

CONFIG = """\
name: "doubler"
backend: "python"
max_batch_size: 16
input [{ name: "x", data_type: TYPE_FP32, dims: [3] }]
output [{ name: "y", data_type: TYPE_FP32, dims: [3] }]
"""
MODEL = """\
import numpy as np
import triton_python_backend_utils as pb


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb.get_input_tensor_by_name(request, "x").as_numpy()
            if (x < 0).any():
                error = pb.TritonError("negative input")
                responses.append(pb.InferenceResponse(output_tensors=[], error=error))
            else:
                responses.append(pb.InferenceResponse([pb.Tensor("y", (2 * x).astype(np.float32))]))
        return responses
"""


@pytest.fixture(scope="module")
def doubler(site) -> str:
    """A Python-backend model loaded into the site's Triton (explicit model control)."""
    model = site.directory / "models" / "doubler"
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(textwrap.dedent(MODEL))
    loaded = httpx.post(
        f"{site.endpoints.triton_http}/v2/repository/models/doubler/load", timeout=60
    )
    assert loaded.status_code == 200, loaded.text
    return "doubler"


@pytest.fixture(params=["http", "grpc"])
def client_of(request, site):
    url = site.endpoints.triton_http if request.param == "http" else site.endpoints.triton_grpc
    return lambda: InferenceClient(url, request.param)


async def test_infer_returns_every_output_by_name(doubler, client_of) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    async with client_of() as client:
        assert await client.ready(doubler)
        outputs = await client.infer(doubler, {"x": x})
        metadata = await client.metadata(doubler)
    assert set(outputs) == {"y"}
    np.testing.assert_array_equal(outputs["y"], 2 * x)
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]


async def test_a_model_error_is_unavailable_and_a_bad_shape_is_rejected(doubler, client_of) -> None:
    async with client_of() as client:
        with pytest.raises(InferenceUnavailable, match="negative input"):
            await client.infer(doubler, {"x": -np.ones((1, 3), np.float32)})
        with pytest.raises(InferenceRejected, match="unexpected shape"):
            await client.infer(doubler, {"x": np.ones((1, 4), np.float32)})
        with pytest.raises(InferenceUnavailable, match="absent"):
            await client.infer("absent", {"x": np.ones((1, 3), np.float32)})
        assert not await client.ready("absent")
        # The client recovers after failures: it reconnects for the next call.
        outputs = await client.infer(doubler, {"x": np.ones((1, 3), np.float32)})
    np.testing.assert_array_equal(outputs["y"], [[2, 2, 2]])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_nothing_listening_is_unavailable(protocol) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with InferenceClient(f"127.0.0.1:{port}", protocol) as client:  # type: ignore[arg-type]
        with pytest.raises(InferenceUnavailable):
            await client.infer("doubler", {"x": np.ones((1, 3), np.float32)}, timeout=2)
        assert not await client.ready("doubler")


async def test_why_a_model_is_not_ready_in_the_servers_own_words(site, doubler) -> None:
    """The probe the operator runs on every ModelDeployment, without tritonclient."""
    url = site.endpoints.triton_http
    broken = site.directory / "models" / "broken"
    (broken / "1").mkdir(parents=True, exist_ok=True)
    (broken / "config.pbtxt").write_text(CONFIG.replace('"doubler"', '"broken"'))
    (broken / "1" / "model.py").write_text('raise ImportError("weights and code differ")\n')
    refused = httpx.post(f"{url}/v2/repository/models/broken/load", timeout=60)
    assert refused.status_code != 200, refused.text

    assert await serving.ready(url, doubler) and await serving.ready(url, doubler, "1")
    assert not await serving.ready(url, doubler, "9")
    assert not await serving.ready(url, "broken")
    assert await serving.why_not_ready(url, doubler) == "doubler is READY"
    unavailable = await serving.why_not_ready(url, "broken")
    assert unavailable.startswith("broken is UNAVAILABLE: "), unavailable
    assert "ImportError: weights and code differ" in unavailable
    absent = await serving.why_not_ready(url, "absent")
    assert absent == f"absent is not in the model repository at {url}"
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    silent = await serving.why_not_ready(f"127.0.0.1:{port}", doubler)
    assert silent.startswith(f"{serving.NO_ANSWER} 127.0.0.1:{port}: "), silent


def test_a_service_is_asked_at_its_cluster_ip_and_an_external_name_by_its_name(
    site, kubectl, namespace
) -> None:
    """A model is probed at its Service's cluster IP (a new Service's DNS name may not resolve
    yet); a Service without one (an ExternalName, as Knative makes) at its name; a Service
    that does not exist is not asked at all."""
    services = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "pm25", "namespace": namespace},
                "spec": {"selector": {"app": "pm25"}, "ports": [{"port": 8000}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "pm25-predictor", "namespace": namespace},
                "spec": {"type": "ExternalName", "externalName": "gateway.example"},
            },
        ],
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(services))
    cluster_ip = kubectl(
        "-n", namespace, "get", "service", "pm25", "-o", "jsonpath={.spec.clusterIP}"
    )
    assert cluster_ip, "the API server gives a ClusterIP Service an address"
    api = api_client(kubeconfig=str(site.endpoints.kubeconfig))
    url = f"http://pm25.{namespace}.svc:8000"
    assert serving.cluster_address(api, url) == f"http://{cluster_ip}:8000"
    external = f"http://pm25-predictor.{namespace}.svc:80"
    assert serving.cluster_address(api, external) == external
    assert serving.cluster_address(api, f"http://absent.{namespace}.svc:8000") is None
