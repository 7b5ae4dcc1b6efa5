"""How the node's components are configured: containerd, the CNI network, the kubelet,
kube-proxy and the cluster DNS. Pure: addresses and paths in, configuration out.

The settings that this machine kind needs, and why, are stated where they are set
(``../shared/notes/real-node.md`` has the story).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aios.stack.node import CLUSTER_DOMAIN, NODE_NAME, NodeNetwork

CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CNI_PLUGINS = "/usr/lib/cni"  # Debian's containernetworking-plugins
RUNC = "/usr/sbin/runc"  # Debian's runc (crun refuses this machine's hybrid cgroups)


def containerd_config(root: Path, cni_conf_dir: Path, sandbox_image: str) -> str:
    """containerd 2.x (config version 3): images kept under ``root`` (outside the node's
    /var overlay: overlayfs snapshots cannot live on an overlay), state in the node's /run."""
    runtime = 'plugins."io.containerd.cri.v1.runtime"'
    return f"""version = 3
root = "{root}"
state = "/run/containerd"
# nri reads /etc/nri and /opt/nri; opt would create /opt/containerd on the host.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"

[{runtime}]
  # root here lacks CAP_SYS_RESOURCE: lowering a sandbox's oom_score_adj below containerd's
  # own fails, and runc then reports "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  disable_apparmor = true
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{runtime}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
  [{runtime}.cni]
    bin_dirs = ["{CNI_PLUGINS}"]
    conf_dir = "{cni_conf_dir}"
"""


def cni_network(network: NodeNetwork) -> dict[str, Any]:
    """A bridge with the node as gateway; pods leave the node masqueraded as it."""
    return {
        "cniVersion": "1.0.0",
        "name": "aios",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(network: NodeNetwork, pki: Path) -> dict[str, Any]:
    """The kubelet of a node that shares its machine: its pods under the site's own cgroup,
    cgroup v1 accepted (this machine has no v2 controllers), swap tolerated."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.address,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{network.cgroup}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "clusterDNS": [network.dns_ip],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "maxPods": 200,
        # A shared machine: its memory and disk are not the node's to police. A threshold
        # of 0% is none (the kubelet skips it); any other lets the machine's other tenants,
        # by filling its disk, evict the chart's pods and taint the node for the rest of a
        # run (the node's allocatable is then its capacity). The kernel still kills a
        # process that runs out of memory.
        "evictionHard": {
            signal: "0%"
            for signal in (
                "memory.available",
                "nodefs.available",
                "nodefs.inodesFree",
                "imagefs.available",
                "imagefs.inodesFree",
            )
        },
        "imageGCHighThresholdPercent": 100,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "0s",
        "shutdownGracePeriod": "0s",
        "containerLogMaxSize": "50Mi",
        "volumeStatsAggPeriod": "10s",
    }


def kube_proxy_config(network: NodeNetwork, kubeconfig: Path) -> dict[str, Any]:
    """iptables mode inside the node's network namespace. Conntrack sizes are global
    sysctls: left as the host has them (``maxPerCore: 0`` and zero timeouts)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": network.pod_cidr,
        "hostnameOverride": NODE_NAME,
        "bindAddress": "0.0.0.0",
        "nodePortAddresses": ["primary"],
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


COREFILE = f"""\
.:1053 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loop
    loadbalance
}}
"""
"""Cluster names only: the local site has no upstream resolver to forward to."""


def cluster_dns(network: NodeNetwork, image: str) -> list[dict[str, Any]]:
    """CoreDNS as clusters run it: a Deployment behind the ``kube-dns`` Service at the
    address the kubelet gives every pod, allowed to read what it answers for. Port 1053:
    it runs without privileges."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": "kube-system", "labels": labels}
    probe = {"periodSeconds": 5, "timeoutSeconds": 2}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns", "labels": labels},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns", "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": COREFILE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 1053, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 1053, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    **probe,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    **probe,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": network.dns_ip,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 1053, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 1053, "protocol": "TCP"},
                ],
            },
        },
    ]


WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]


def audit_policy(service_account_namespace: str) -> dict[str, Any]:
    """The API server's audit policy: every write by aios's own components (the service
    accounts of its release namespace), at Metadata level. It answers "what did the operator
    write, and when" — a restart that changed nothing must show nothing."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {
                "level": "Metadata",
                "userGroups": [f"system:serviceaccounts:{service_account_namespace}"],
                "verbs": WRITE_VERBS,
            },
            {"level": "None"},
        ],
    }


def to_json(document: dict[str, Any]) -> str:
    """Kubernetes component configs are YAML, and JSON is YAML."""
    return json.dumps(document, indent=2)
