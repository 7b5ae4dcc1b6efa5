"""One client for every model aios serves: the V2 / Open Inference Protocol over tritonclient.

Triton and KServe's ModelServer both speak the protocol, so callers (the intent runner,
the rollout analysis, the benchmark) use ``InferenceClient`` whatever the runtime.
Failures a caller should answer with its deterministic fallback — no connection, a
timeout, a 5xx, a model that is not loaded — raise ``InferenceUnavailable``; a request the
model rejects (wrong input name, shape or type) raises ``InferenceRejected``, because
retrying it elsewhere cannot help.

``route`` is the traffic split of a ModelDeployment in raw mode: the operator publishes
the stable, canary and shadow endpoints in its status, and every caller draws where each
request goes from ``canaryWeight``, so a rollout shifts traffic without a proxy in the path.
``decides_alike`` is when two versions' answers to one request count as the same decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

import aiohttp
import numpy as np
import numpy.typing as npt
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from aios.connectors import serving

Protocol_ = Literal["http", "grpc"]
Role = Literal["stable", "canary", "shadow"]
_EPSILON = 1e-4

# Statuses after which another replica, version or the fallback may well succeed.
_UNAVAILABLE_HTTP = {"404", "408", "429", "500", "502", "503", "504"}
_UNAVAILABLE_GRPC = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.INTERNAL",
    "StatusCode.UNKNOWN",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.NOT_FOUND",
    "StatusCode.CANCELLED",
}


class InferenceError(Exception):
    """An inference did not return outputs."""


class InferenceUnavailable(InferenceError):
    """The model could not answer (connect error, timeout, 5xx, not loaded): fall back."""


class InferenceRejected(InferenceError):
    """The model refused the request itself (bad input name, shape or type)."""


class _Client(Protocol):
    """What both tritonclient asyncio clients offer (tritonclient ships no type hints)."""

    async def infer(
        self,
        model_name: str,
        inputs: list[Any],
        model_version: str = "",
        headers: dict[str, str] | None = None,
    ) -> Any: ...
    async def is_model_ready(self, model_name: str, model_version: str = "") -> bool: ...
    async def get_model_metadata(self, model_name: str, model_version: str = "") -> Any: ...
    async def close(self) -> None: ...


class InferenceClient:
    """A V2 inference client for one endpoint (a Service URL, resolved per connection).

    ``url``: ``http://host:port`` or ``host:port``; the HTTP port for ``protocol="http"``,
    the gRPC port for ``"grpc"``. After a failure the connection is dropped, so the next
    call resolves the Service again (its pods may have moved).
    """

    def __init__(self, url: str, protocol: Protocol_ = "grpc") -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be http or grpc, not {protocol!r}")
        self.url = url
        self.protocol = protocol
        self._client: _Client | None = None

    def _connect(self) -> _Client:
        if self._client is None:
            address = authority(self.url)
            if self.protocol == "http":
                import tritonclient.http.aio as http

                self._client = http.InferenceServerClient(address)
            else:
                import tritonclient.grpc.aio as grpc

                self._client = grpc.InferenceServerClient(address)
        return self._client

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        version: str = "",
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """Run ``model`` on named input tensors; every output comes back by name.
        ``headers`` go with the request (HTTP headers, or gRPC metadata)."""
        client = self._connect()
        tensors = [self._tensor(name, np.asarray(value)) for name, value in inputs.items()]
        try:
            result = await asyncio.wait_for(
                client.infer(model, tensors, version, headers=dict(headers or {})), timeout
            )
        except InferenceServerException as error:
            raise await self._failed(classify(error, self.protocol, self._where(model))) from error
        except TimeoutError as error:
            raise await self._failed(
                InferenceUnavailable(f"{self._where(model)}: no answer within {timeout:g}s")
            ) from error
        except (OSError, aiohttp.ClientError) as error:
            raise await self._failed(
                InferenceUnavailable(f"{self._where(model)}: {type(error).__name__}: {error}")
            ) from error
        response = result.get_response() if self.protocol == "http" else result.get_response(True)
        return {out["name"]: result.as_numpy(out["name"]) for out in response["outputs"]}

    async def ready(self, model: str, version: str = "", timeout: float = 2.0) -> bool:
        """Whether the endpoint answers and ``model`` is loaded; never raises."""
        if self.protocol == "http":
            return await serving.ready(self.url, model, version, timeout)
        try:
            return bool(
                await asyncio.wait_for(self._connect().is_model_ready(model, version), timeout)
            )
        except Exception:
            await self.close()
            return False

    async def metadata(self, model: str, version: str = "", timeout: float = 2.0) -> dict[str, Any]:
        """The model's V2 metadata (``inputs`` and ``outputs`` with name, datatype, shape)."""
        client = self._connect()
        try:
            if self.protocol == "http":
                found = await asyncio.wait_for(client.get_model_metadata(model, version), timeout)
            else:
                grpc_client: Any = client
                found = await asyncio.wait_for(
                    grpc_client.get_model_metadata(model, version, as_json=True), timeout
                )
        except InferenceServerException as error:
            raise await self._failed(classify(error, self.protocol, self._where(model))) from error
        except (TimeoutError, OSError, aiohttp.ClientError) as error:
            raise await self._failed(
                InferenceUnavailable(f"{self._where(model)}: {type(error).__name__}: {error}")
            ) from error
        for tensor in (*found.get("inputs", ()), *found.get("outputs", ())):
            tensor["shape"] = [int(d) for d in tensor["shape"]]  # gRPC's JSON has int64 strings
        return dict(found)

    def _where(self, model: str) -> str:
        return f"{model} at {self.url}"

    def _tensor(self, name: str, value: npt.NDArray[Any]) -> Any:
        if self.protocol == "http":
            import tritonclient.http as http

            tensor: Any = http.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value, binary_data=True)
        else:
            import tritonclient.grpc as grpc

            tensor = grpc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
        return tensor

    async def _failed(self, error: InferenceError) -> InferenceError:
        if isinstance(error, InferenceUnavailable):
            await self.close()
        return error

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Closing a broken connection must not hide the error that broke it.
            with contextlib.suppress(Exception):
                await client.close()

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def authority(url: str) -> str:
    """``http://host:port/path`` → ``host:port`` (what tritonclient wants)."""
    return url.split("://", 1)[-1].split("/", 1)[0]


def classify(
    error: InferenceServerException, protocol: Protocol_, where: str = ""
) -> InferenceError:
    """A server's error as unavailable (fall back) or rejected (the request is wrong)."""
    status = str(error.status() or "")
    message = error.message() or str(error)
    unavailable = _UNAVAILABLE_HTTP if protocol == "http" else _UNAVAILABLE_GRPC
    text = f"{where}: {status or 'error'}: {message}" if where else f"{status}: {message}"
    if status in unavailable or not status or "not ready" in message or "unavailable" in message:
        return InferenceUnavailable(text)
    return InferenceRejected(text)


# -- routing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One version of a model behind one endpoint.

    ``version`` is the ModelDeployment's (release) version, for records and metrics. It is
    NOT a V2 model version: each endpoint serves exactly one version of ``model``, so call
    ``infer(target.model, inputs)`` without a version (Triton's versions are integers).
    """

    role: Role
    version: str
    model: str
    http: str
    grpc: str

    def url(self, protocol: Protocol_) -> str:
        return self.http if protocol == "http" else self.grpc


@dataclass(frozen=True)
class Route:
    """Where one request goes: ``primary`` answers; ``mirror``, if any, gets a copy whose
    answer is compared, never acted on."""

    @property
    def candidate(self) -> Target | None:
        """The new version of the pair, if the request goes to two: the one not stable."""
        if self.mirror is None:
            return None
        return self.mirror if self.primary.role == "stable" else self.primary

    primary: Target
    mirror: Target | None = None


def _target(status: Mapping[str, Any], role: Role) -> Target | None:
    found = status.get(role)
    if not found or not found.get("http") or not found.get("grpc"):
        return None
    if role != "stable" and found.get("ready") is False:
        return None  # a new version still loading gets no traffic, not even mirrored
    return Target(role, str(found["version"]), str(found["model"]), found["http"], found["grpc"])


def route(status: Mapping[str, Any], draw: float) -> Route:
    """Where a request goes, given a ModelDeployment's ``status`` and a uniform ``draw`` in
    [0, 1): the canary when ``draw`` falls under ``canaryWeight`` percent, else the stable
    version. A shadow version, if any, gets a mirrored copy; so does the stable version of
    a request the canary answers, so both versions' decisions on the same live readings
    can be compared (the canary's share of traffic, answered twice, while it lasts)."""
    stable = _target(status, "stable")
    if stable is None:
        raise InferenceUnavailable("the ModelDeployment serves no version yet")
    canary = _target(status, "canary")
    weight = int(status.get("canaryWeight") or 0)
    if canary is not None and draw * 100 < weight:
        return Route(canary, stable)
    return Route(stable, _target(status, "shadow"))


def decides_alike(a: float, b: float) -> bool:
    """Scores in [0, 1] decide alike on the same side of 0.5; other outputs (a forecast)
    agree within 5 %."""
    if 0 <= a <= 1 and 0 <= b <= 1:
        return (a >= 0.5) == (b >= 0.5)
    return abs(a - b) <= 0.05 * max(abs(a), abs(b), _EPSILON)
