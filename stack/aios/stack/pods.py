"""Run aios's own pods as host processes: the local site's small kubelet.

kwok's node runs no containers. For pods labelled ``app.kubernetes.io/part-of=aios`` this
supervisor starts what the pod template says — command, args, environment, mounted
ConfigMaps and Secrets — as a host process, so a rendering mistake shows up locally, not
first in production. Each pod gets its own loopback address (``status.podIP`` as the
process sees it), so every container can keep its container ports; a Service table
written to ``AIOS_SERVICE_MAP`` stands in for cluster DNS and kube-proxy.

Translation is pure (``host_process``, ``service_table``); ``PodSupervisor`` does the I/O.
Production uses the real kubelet.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from aios.stack import components
from aios.stack.process import ManagedProcess

PART_OF_AIOS = "app.kubernetes.io/part-of=aios"
SERVICE_MAP_ENV = "AIOS_SERVICE_MAP"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostProcess:
    """One container, translated for the host."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path | None
    files: dict[Path, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class PodObjects:
    """What the pod refers to by name: ConfigMaps and Secrets of its namespace."""

    config_maps: Mapping[str, Mapping[str, Any]]
    secrets: Mapping[str, Mapping[str, Any]]


ImageResolver = Callable[[str, list[str]], tuple[list[str], dict[str, str]]]
"""(image, command with args) → (host argv, extra environment)."""

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables expand, others stay verbatim,
    ``$$(VAR)`` escapes."""

    def replace(match: re.Match[str]) -> str:
        start = match.start()
        if start > 0 and text[start - 1] == "$":
            return match.group(0)
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(replace, text).replace("$$(", "$(")


def rewrite_paths(text: str, mounts: Mapping[str, Path]) -> str:
    """Replace container mount paths in ``text`` by their host directories."""
    for mount in sorted(mounts, key=len, reverse=True):
        pattern = re.escape(mount.rstrip("/")) + r"(?=/|$|[^\w.-])"
        host = str(mounts[mount]).replace("\\", "\\\\")  # a replacement, not a pattern
        text = re.sub(pattern, host, text)
    return text


def _field(pod: Mapping[str, Any], path: str, pod_ip: str) -> str:
    meta = pod["metadata"]
    if path == "status.podIP":
        return pod_ip
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta[path.split(".")[1]])
    if path == "spec.nodeName":
        return str(pod["spec"].get("nodeName", ""))
    if path == "spec.serviceAccountName":
        return str(pod["spec"].get("serviceAccountName", "default"))
    found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if found:
        return str(meta.get(found.group(1), {}).get(found.group(2), ""))
    raise ValueError(f"unsupported fieldRef {path}")


def _key_value(
    kind: str, objects: Mapping[str, Mapping[str, Any]], ref: Mapping[str, Any]
) -> str | None:
    obj = objects.get(ref["name"])
    if obj is None:
        if ref.get("optional"):
            return None
        raise LookupError(f"{kind} {ref['name']} not found")
    value = _data(obj).get(ref["key"])
    if value is None and not ref.get("optional"):
        raise LookupError(f"{kind} {ref['name']} has no key {ref['key']}")
    return None if value is None else value.decode()


def _data(obj: Mapping[str, Any]) -> dict[str, bytes]:
    """ConfigMap or Secret contents as bytes."""
    data = (
        {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        if obj.get("kind") != "Secret"
        else {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    )
    data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def container_env(
    pod: Mapping[str, Any], container: Mapping[str, Any], objects: PodObjects, pod_ip: str
) -> dict[str, str]:
    """The container's environment, resolved the way the kubelet does (in order)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        ref = source.get("configMapRef") or source.get("secretRef")
        objs = objects.config_maps if "configMapRef" in source else objects.secrets
        obj = objs.get(ref["name"])
        if obj is None:
            if ref.get("optional"):
                continue
            raise LookupError(f"envFrom {ref['name']} not found")
        env.update({prefix + k: v.decode() for k, v in _data(obj).items()})
    for item in container.get("env") or []:
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = expand(item.get("value", ""), env)
        elif "fieldRef" in source:
            env[item["name"]] = _field(pod, source["fieldRef"]["fieldPath"], pod_ip)
        elif "configMapKeyRef" in source:
            value = _key_value("ConfigMap", objects.config_maps, source["configMapKeyRef"])
            if value is not None:
                env[item["name"]] = value
        elif "secretKeyRef" in source:
            value = _key_value("Secret", objects.secrets, source["secretKeyRef"])
            if value is not None:
                env[item["name"]] = value
        elif "resourceFieldRef" in source:
            env[item["name"]] = "0"
    return env


def volume_files(
    pod: Mapping[str, Any], objects: PodObjects, root: Path
) -> tuple[dict[str, Path], dict[Path, bytes]]:
    """Host directories for the pod's volumes, and the files to write into them."""
    directories: dict[str, Path] = {}
    files: dict[Path, bytes] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "hostPath" in volume:
            directories[name] = Path(volume["hostPath"]["path"])
            continue
        directories[name] = root / "volumes" / name
        source = volume.get("configMap") or volume.get("secret")
        if source is None:
            continue  # emptyDir and friends: an empty directory
        objs = objects.config_maps if "configMap" in volume else objects.secrets
        obj = objs.get(source.get("name") or source.get("secretName", ""))
        if obj is None:
            if source.get("optional"):
                continue
            raise LookupError(
                f"volume {name}: {source.get('name') or source.get('secretName')} not found"
            )
        data = _data(obj)
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            files[directories[name] / item["path"]] = data[item["key"]]
    return directories, files


def host_process(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    objects: PodObjects,
    pod_ip: str,
    root: Path,
    resolve_image: ImageResolver,
) -> HostProcess:
    """Translate one container of ``pod`` into a host process rooted at ``root``."""
    volumes, files = volume_files(pod, objects, root)
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        base = volumes[mount["name"]]
        mounts[mount["mountPath"]] = base / mount["subPath"] if mount.get("subPath") else base
    env = container_env(pod, container, objects, pod_ip)
    env = {k: rewrite_paths(v, mounts) for k, v in env.items()}
    command = [rewrite_paths(expand(a, env), mounts) for a in (container.get("command") or [])]
    command += [rewrite_paths(expand(a, env), mounts) for a in (container.get("args") or [])]
    if not command:
        raise ValueError(
            f"container {container['name']} has no command: "
            "the local site cannot run an image's entrypoint"
        )
    argv, extra = resolve_image(container.get("image", ""), command)
    workdir = container.get("workingDir")
    return HostProcess(
        name=container["name"],
        argv=argv,
        env={**extra, **env},
        cwd=Path(rewrite_paths(workdir, mounts)) if workdir else None,
        files=files,
    )


def service_table(
    services: list[Mapping[str, Any]],
    pod_addresses: Mapping[str, tuple[Mapping[str, str], str, str]],
) -> dict[str, list[str]]:
    """``name.ns.svc[.cluster.local]:port`` → the loopback ``ip:targetPort`` of each ready
    pod the Service selects. ``pod_addresses``: pod key → (labels, namespace, ip)."""
    table: dict[str, list[str]] = {}
    for service in services:
        meta, spec = service["metadata"], service.get("spec") or {}
        selector = spec.get("selector") or {}
        if not selector:
            continue
        ips = sorted(
            ip
            for labels, namespace, ip in pod_addresses.values()
            if namespace == meta["namespace"]
            and all(labels.get(k) == v for k, v in selector.items())
        )
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port["port"])
            if not isinstance(target, int):
                continue  # named target ports are not used by aios's own pods
            addresses = [f"{ip}:{target}" for ip in ips]
            base = f"{meta['name']}.{meta['namespace']}"
            for host in (base, f"{base}.svc", f"{base}.svc.cluster.local"):
                table[f"{host}:{port['port']}"] = addresses
    return table


def service_account_kubeconfig(
    server: str, ca: bytes, token: str, namespace: str
) -> dict[str, Any]:
    """A kubeconfig carrying a ServiceAccount token, defaulting to the pod's namespace."""
    cluster: dict[str, Any] = {"server": server}
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "pod",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [
            {
                "name": "pod",
                "context": {
                    "cluster": "cluster",
                    "user": "service-account",
                    "namespace": namespace,
                },
            }
        ],
    }


def default_image_resolver(image: str, command: list[str]) -> tuple[list[str], dict[str, str]]:
    """Map a container's command to this host: Triton from the pytriton wheel; aios's own
    console scripts from this interpreter's environment."""
    program = command[0]
    if program == "tritonserver" or program.endswith("/tritonserver"):
        dist = components.triton()
        args = command[1:]
        if not any(a.startswith("--backend-directory") for a in args):
            args.append(f"--backend-directory={dist.backends}")
        return [str(dist.binary), *args], dist.environment()
    local = Path(sys.executable).parent / program
    if local.exists():
        return [str(local), *command[1:]], {}
    if program in ("python", "python3"):
        return [sys.executable, *command[1:]], {}
    found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(f"{program} (image {image}) has no host equivalent")
    return [found, *command[1:]], {}


class PodSupervisor:
    """Polls the API server for aios pods bound to a node and runs them as host processes."""

    def __init__(
        self,
        kubeconfig: str,
        directory: Path,
        resolve_image: ImageResolver = default_image_resolver,
        interval: float = 0.5,
    ) -> None:
        from kubernetes import config

        self.api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
        self.directory = directory
        self.service_map = directory / "service-map.json"
        self.resolve_image = resolve_image
        self.interval = interval
        self.running: dict[str, dict[str, ManagedProcess]] = {}  # pod uid → container → process
        self.addresses: dict[str, tuple[dict[str, str], str, str]] = {}
        self.restarts: dict[tuple[str, str], tuple[int, float]] = {}
        self.failures: dict[str, str] = {}  # pod uid → why it could not start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aios-pod-supervisor", daemon=True)
        # Pod addresses start at a random /24 of 127.42/16: sites (several test runs on one
        # machine) that all counted from 127.42.0.2 handed out each other's addresses, and a
        # pod that could not bind reached another site's server instead.
        self._next_ip = 250 * random.randrange(200) + 1

    def start(self) -> PodSupervisor:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.service_map.write_text("{}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for containers in self.running.values():
            for process in containers.values():
                process.stop()
        self.running.clear()

    def environment(self) -> dict[str, str]:
        """What host processes outside the supervisor need to resolve Services too."""
        return {SERVICE_MAP_ENV: str(self.service_map)}

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # the API server restarting must not end the supervisor
                log.exception("pod supervisor sync failed")
            self._stop.wait(self.interval)

    def sync(self) -> None:
        pods = self.api.list_pod_for_all_namespaces(label_selector=PART_OF_AIOS)
        wanted = {}
        for pod in self.api.api_client.sanitize_for_serialization(pods)["items"]:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") or not pod["spec"].get("nodeName"):
                continue
            if (pod.get("status") or {}).get("phase") not in ("Running", "Pending"):
                continue
            wanted[meta["uid"]] = pod
        for uid in list(self.running):
            if uid not in wanted:
                for process in self.running.pop(uid).values():
                    process.stop()
                self.addresses.pop(uid, None)
        for uid, pod in wanted.items():
            if uid not in self.running and uid not in self.failures:
                self._start_pod(pod)
            elif uid in self.running:
                self._restart_exited(uid, pod)
        self._write_service_map()

    def _objects(self, namespace: str) -> PodObjects:
        sanitize = self.api.api_client.sanitize_for_serialization
        cms = sanitize(self.api.list_namespaced_config_map(namespace))["items"]
        secrets = sanitize(self.api.list_namespaced_secret(namespace))["items"]
        for secret in secrets:
            secret["kind"] = "Secret"
        return PodObjects(
            {c["metadata"]["name"]: c for c in cms}, {s["metadata"]["name"]: s for s in secrets}
        )

    def _start_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ip = f"127.42.{self._next_ip // 250}.{self._next_ip % 250 + 1}"
        self._next_ip += 1
        root = self.directory / f"{meta['namespace']}_{meta['name']}"
        containers: dict[str, ManagedProcess] = {}
        try:
            objects = self._objects(meta["namespace"])
            credentials = self._service_account(pod, root)
            for container in pod["spec"]["containers"]:
                spec = host_process(pod, container, objects, ip, root, self.resolve_image)
                for path, content in spec.files.items():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
                env = {
                    "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                    "HOME": str(root),
                    "LANG": "C.UTF-8",
                    SERVICE_MAP_ENV: str(self.service_map),
                    "PYTHONUNBUFFERED": "1",
                    **credentials,
                    **spec.env,
                }
                (spec.cwd or root).mkdir(parents=True, exist_ok=True)
                process = ManagedProcess(
                    f"{meta['name']}/{spec.name}",
                    spec.argv,
                    root / f"{spec.name}.log",
                    env=env,  # exactly the pod's environment, not the supervisor's
                    cwd=spec.cwd or root,
                    inherit_env=False,
                )
                containers[spec.name] = process.start()
        except (LookupError, ValueError, FileNotFoundError) as error:
            self.failures[meta["uid"]] = str(error)
            log.error(
                "pod %s/%s cannot run on this host: %s", meta["namespace"], meta["name"], error
            )
            for process in containers.values():
                process.stop()
            return
        self.running[meta["uid"]] = containers
        self.addresses[meta["uid"]] = (meta.get("labels") or {}, meta["namespace"], ip)

    def _service_account(self, pod: dict[str, Any], root: Path) -> dict[str, str]:
        """The pod's ServiceAccount credentials, as the kubelet would mount them: a token
        bound to the pod from the TokenRequest API (so RBAC applies for real), handed to
        the process as a kubeconfig because a host process cannot see the in-cluster path."""
        spec = pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return {}
        meta = pod["metadata"]
        account = spec.get("serviceAccountName") or "default"
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=86400,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=meta["name"], uid=meta["uid"]
                ),
            )
        )
        answer = self.api.create_namespaced_service_account_token(
            account, meta["namespace"], request
        )
        if answer.status is None or not answer.status.token:
            raise LookupError(f"no token for ServiceAccount {account}")
        configuration = self.api.api_client.configuration
        path = root / "serviceaccount" / "kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        ca = Path(configuration.ssl_ca_cert).read_bytes() if configuration.ssl_ca_cert else b""
        path.write_text(
            json.dumps(
                service_account_kubeconfig(
                    configuration.host, ca, answer.status.token, meta["namespace"]
                )
            )
        )
        path.chmod(0o600)
        return {"KUBECONFIG": str(path)}

    def _restart_exited(self, uid: str, pod: dict[str, Any]) -> None:
        """Restart a crashed container with the kubelet's back-off (10 s doubling to 5 min)."""
        for name, process in self.running[uid].items():
            if process.running():
                continue
            count, not_before = self.restarts.get((uid, name), (0, 0.0))
            now = time.monotonic()
            if now < not_before:
                continue
            delay = min(300.0, 10.0 * 2**count)
            self.restarts[(uid, name)] = (count + 1, now + delay)
            log.warning(
                "%s/%s exited (%s); restarting",
                pod["metadata"]["name"],
                name,
                process.popen.returncode if process.popen else None,
            )
            process.start()

    def _write_service_map(self) -> None:
        services = self.api.api_client.sanitize_for_serialization(
            self.api.list_service_for_all_namespaces()
        )["items"]
        table = service_table(services, self.addresses)
        text = json.dumps(table, sort_keys=True)
        if not self.service_map.exists() or self.service_map.read_text() != text:
            tmp = self.service_map.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.service_map)
