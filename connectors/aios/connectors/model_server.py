"""KServe's ModelServer for aios's Python-format model repositories.

``python -m aios.connectors.model_server --model-repository DIR --host IP`` serves every
model of a Triton-layout repository (``<model>/<n>/model.py`` + weights) over the V2 /
Open Inference Protocol, REST and gRPC, with KServe's own server. ``model.py`` must define
``SIGNATURES``, ``kind(weights)``, ``load(directory)`` and ``predict(weights, inputs)``
(``hack/models/model.py`` does): the same file Triton's Python backend runs, so one
artefact serves on both runtimes.

KServe binds ``0.0.0.0`` and ``[::]``; ``--host`` makes both servers bind one address
instead (the pod's own, ``$(POD_IP)``, as Triton does; or loopback, when it runs on a host).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


def latest_version(model_dir: Path) -> Path:
    """The highest numeric version directory of a model, as Triton picks it."""
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"{model_dir} has no numeric version directory")
    return max(versions, key=lambda p: int(p.name))


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def repository_models(repository: Path) -> list[Path]:
    """Every model directory (one holding a numeric version with a ``model.py``)."""
    if not repository.is_dir():
        raise FileNotFoundError(f"model repository {repository} does not exist")
    found = [
        d
        for d in sorted(repository.iterdir())
        if d.is_dir() and any(v.name.isdigit() and (v / "model.py").exists() for v in d.iterdir())
    ]
    if not found:
        raise FileNotFoundError(f"model repository {repository} holds no Python-format model")
    return found


def build_model(model_dir: Path) -> Any:
    """A ``kserve.Model`` running ``model_dir``'s ``model.py``."""
    import kserve
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class RepositoryModel(kserve.Model):
        def __init__(self, name: str, directory: Path) -> None:
            super().__init__(name)
            self.directory = directory

        def load(self) -> bool:
            version = latest_version(self.directory)
            module_name = f"aios_model_{self.name.replace('-', '_')}"
            self.runtime = load_module(version / "model.py", module_name)
            self.weights = self.runtime.load(version)
            self.signature = self.runtime.SIGNATURES[self.runtime.kind(self.weights)]
            self.ready = True
            return True

        def get_input_types(self) -> list[dict[str, Any]]:
            return list(self.signature["inputs"])

        def get_output_types(self) -> list[dict[str, Any]]:
            return list(self.signature["outputs"])

        async def predict(
            self,
            payload: InferRequest,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> InferResponse:
            inputs = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
            # gRPC clients (tritonclient) read raw output contents only.
            binary = payload.from_grpc or payload.use_binary_outputs
            outputs = []
            for name, value in self.runtime.predict(self.weights, inputs).items():
                array = np.ascontiguousarray(value, dtype=np.float32)
                output = InferOutput(name, list(array.shape), "FP32")
                output.set_data_from_numpy(array, binary_data=binary)
                outputs.append(output)
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=outputs,
                use_binary_outputs=binary,
            )

    return RepositoryModel(model_dir.name, model_dir)


def bind_to(host: str) -> None:
    """Make KServe's REST and gRPC servers listen on ``host`` rather than every address."""
    from kserve import model_server
    from kserve.protocol.grpc import server as grpc_server

    class BoundRESTServer(model_server.RESTServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host

    real_aio = grpc_server.aio

    class BoundAio:
        """``grpc.aio`` whose servers turn ``[::]:port`` into ``host:port``."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_aio, name)

        @staticmethod
        def server(*args: Any, **kwargs: Any) -> Any:
            created = real_aio.server(*args, **kwargs)
            add_port = created.add_insecure_port
            created.add_insecure_port = lambda address: add_port(address.replace("[::]", host, 1))
            return created

    model_server.RESTServer = BoundRESTServer
    grpc_server.aio = BoundAio()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aios-model-server", description=__doc__)
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--host", default="0.0.0.0", help="Address both servers bind.")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=8081)
    args, _ = parser.parse_known_args(argv)
    models = [build_model(d) for d in repository_models(args.model_repository)]
    for model in models:
        model.load()
    import kserve

    if args.host not in ("0.0.0.0", ""):
        bind_to(args.host)
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start(models)


if __name__ == "__main__":
    main()
