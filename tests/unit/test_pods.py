"""The local kubelet's translation of pod templates: pure, no servers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from aios.stack.pods import PodObjects, expand, host_process, rewrite_paths, service_table


def resolver(image: str, command: list[str]) -> tuple[list[str], dict[str, str]]:
    return ["/host/bin/" + command[0], *command[1:]], {"FROM_RESOLVER": image}


POD = {
    "metadata": {"name": "runner-0", "namespace": "city", "uid": "u1", "labels": {"app": "r"}},
    "spec": {
        "nodeName": "kwok-node-0",
        "volumes": [
            {"name": "config", "configMap": {"name": "runner-config"}},
            {
                "name": "creds",
                "secret": {
                    "secretName": "runner-creds",
                    "items": [{"key": "token", "path": "auth/token"}],
                },
            },
            {"name": "models", "hostPath": {"path": "/srv/models"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    },
}
CONTAINER = {
    "name": "runner",
    "image": "ghcr.io/aios/aios:0.1.0",
    "command": ["aios-intent-runner"],
    "args": [
        "--config=/etc/aios/config.yaml",
        "--listen=$(POD_IP):8080",
        "--literal=$$(POD_IP)",
        "--models",
        "/mnt/models/pm25",
        "--cache=/tmp/cache",
    ],
    "env": [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {
            "name": "BOOT",
            "valueFrom": {"configMapKeyRef": {"name": "runner-config", "key": "bootstrap"}},
        },
        {"name": "URL", "value": "http://$(POD_IP):8080/x"},
        {"name": "CONFIG_FILE", "value": "/etc/aios/config.yaml"},
    ],
    "envFrom": [{"secretRef": {"name": "runner-creds"}, "prefix": "CRED_"}],
    "volumeMounts": [
        {"name": "config", "mountPath": "/etc/aios"},
        {"name": "creds", "mountPath": "/var/run/creds"},
        {"name": "models", "mountPath": "/mnt/models"},
        {"name": "scratch", "mountPath": "/tmp/cache"},
    ],
}
OBJECTS = PodObjects(
    config_maps={"runner-config": {"data": {"config.yaml": "a: 1\n", "bootstrap": "k:9092"}}},
    secrets={
        "runner-creds": {"kind": "Secret", "data": {"token": base64.b64encode(b"s3cret").decode()}}
    },
)


def test_a_container_becomes_a_host_process(tmp_path: Path) -> None:
    spec = host_process(POD, CONTAINER, OBJECTS, "127.42.0.2", tmp_path, resolver)
    config = tmp_path / "volumes" / "config"
    assert spec.argv[0] == "/host/bin/aios-intent-runner"
    assert f"--config={config}/config.yaml" in spec.argv
    assert "--listen=127.42.0.2:8080" in spec.argv
    assert "--literal=$(POD_IP)" in spec.argv
    assert "/srv/models/pm25" in spec.argv
    assert f"--cache={tmp_path / 'volumes' / 'scratch'}" in spec.argv
    assert spec.env["NS"] == "city" and spec.env["APP"] == "r" and spec.env["BOOT"] == "k:9092"
    assert spec.env["URL"] == "http://127.42.0.2:8080/x"
    assert spec.env["CONFIG_FILE"] == f"{config}/config.yaml"
    assert spec.env["CRED_token"] == "s3cret"
    assert spec.env["FROM_RESOLVER"] == "ghcr.io/aios/aios:0.1.0"
    assert spec.files[config / "config.yaml"] == b"a: 1\n"
    assert spec.files[tmp_path / "volumes" / "creds" / "auth" / "token"] == b"s3cret"


def test_a_missing_config_map_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="runner-config"):
        host_process(
            POD, CONTAINER, PodObjects({}, OBJECTS.secrets), "127.0.0.1", tmp_path, resolver
        )


def test_a_container_without_command_cannot_run_locally(tmp_path: Path) -> None:
    bare = {"name": "c", "image": "x"}
    with pytest.raises(ValueError, match="no command"):
        host_process(
            {**POD, "spec": {"volumes": []}}, bare, OBJECTS, "127.0.0.1", tmp_path, resolver
        )


def test_expand_leaves_unknown_variables_verbatim() -> None:
    assert expand("$(A)-$(B)", {"A": "1"}) == "1-$(B)"


def test_rewrite_paths_respects_path_boundaries() -> None:
    mounts = {"/etc/aios": Path("/h/c")}
    assert rewrite_paths("/etc/aios/x /etc/aiosx /etc/aios", mounts) == "/h/c/x /etc/aiosx /h/c"


def test_service_table_maps_cluster_names_to_selected_pods() -> None:
    services = [
        {
            "metadata": {"name": "triton", "namespace": "city"},
            "spec": {
                "selector": {"app": "t"},
                "ports": [{"port": 8000, "targetPort": 8000}, {"port": 80, "targetPort": 8001}],
            },
        },
        {"metadata": {"name": "headless", "namespace": "city"}, "spec": {"ports": [{"port": 1}]}},
    ]
    pods = {
        "a": ({"app": "t"}, "city", "127.42.0.3"),
        "b": ({"app": "t"}, "other", "127.42.0.4"),
        "c": ({"app": "x"}, "city", "127.42.0.5"),
    }
    table = service_table(services, pods)
    assert table["triton.city.svc:8000"] == ["127.42.0.3:8000"]
    assert table["triton.city.svc.cluster.local:80"] == ["127.42.0.3:8001"]
    assert table["triton.city:8000"] == ["127.42.0.3:8000"]
    assert not any(k.startswith("headless") for k in table)
