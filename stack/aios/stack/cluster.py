"""The local site's Kubernetes: etcd, the control plane and one real node (containerd,
the kubelet, kube-proxy) with the cluster DNS, all inside the node's namespaces.

The control plane listens on the node's address, the way a single-node cluster's does:
pods reach the API server through the ``kubernetes`` Service, the host through the node's
link. The node's images (the pod sandbox, CoreDNS, aios's own) are imported into its
containerd from the archives ``aios.stack.images`` builds; no registry is involved.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aios.stack import components
from aios.stack.images import ensure_images
from aios.stack.node import NODE_NAME
from aios.stack.node_config import (
    CONTAINERD_SOCKET,
    audit_policy,
    cluster_dns,
    cni_network,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
    to_json,
)
from aios.stack.pki import SitePki, ensure_site_pki, issue_node_certificates
from aios.stack.process import ComponentFailed
from aios.stack.release import NAMESPACE as RELEASE_NAMESPACE
from aios.stack.site import health

if TYPE_CHECKING:
    from aios.stack.site import Site

ADMIN_TOKEN_USER = "aios-admin"
LOCAL_PEOPLE: dict[str, tuple[str, ...]] = {
    "alice": ("street-cleaning-supervisors", "air-quality-leads"),
}
"""People the local site knows by a static token, standing in for a city's identity
provider: the groups the example city asks to approve (``examples/city-air-quality``).
Their tokens are in the site's ``people/`` directory, to sign in to the console."""
AUDIT_LOG = "kube-apiserver-audit.log"
"""In the site's ``logs/``: what aios's own components wrote (``node_config.audit_policy``)."""
API_PORT = 6443
ETCD_PORT = 2379
NODE_IMAGES = ("pause", "coredns")
"""Images the node itself needs; aios's own are imported beside them."""


class Cluster:
    """Starts the site's Kubernetes into ``site`` (its processes, logs and endpoints)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.network = site.node.network
        self.pki_dir = site.directory / "pki"

    def start(self) -> None:
        pki = ensure_site_pki(self.pki_dir)
        issue_node_certificates(pki, NODE_NAME, self.network.address, self.network.api_service_ip)
        with ThreadPoolExecutor(max_workers=2) as pool:
            runtime = pool.submit(self._start_runtime)  # containerd and its images
            self._start_control_plane(pki)
            runtime.result()
        self._start_node(pki)
        self.site.kubectl(["apply", "-f", "-"], stdin=json.dumps(self._dns_objects()))
        self.site.processes["kubelet"].wait_healthy(self._node_ready, 120)
        self.site.processes["kubelet"].wait_healthy(self._dns_ready, 120)

    # -- the control plane ---------------------------------------------------------------
    def _start_control_plane(self, pki: SitePki) -> None:
        site, d = self.site, self.site.directory
        etcd = site.spawn(
            "etcd",
            [
                str(components.ETCD.binary()),
                "--name=site",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=site=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )
        etcd.wait_healthy(lambda: site.inside_ok(f"http://127.0.0.1:{ETCD_PORT}/health"), 60)
        self._start_apiserver(pki)
        kubeconfig = d / "kubeconfig"
        k8s = components.KUBERNETES
        common = [f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        site.spawn(
            "kube-controller-manager",
            [
                str(k8s.binary("kube-controller-manager")),
                *common,
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=false",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={self.network.service_cidr}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            ],
        )
        site.spawn(
            "kube-scheduler",
            [
                str(k8s.binary("kube-scheduler")),
                *common,
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
            ],
        )

    def _start_apiserver(self, pki: SitePki) -> None:
        site, network = self.site, self.network
        tokens = static_tokens(self.pki_dir / "tokens.csv", site.directory / "people")
        site.admin_token = tokens[ADMIN_TOKEN_USER]
        policy = self.pki_dir.parent / "audit-policy.json"
        policy.write_text(to_json(audit_policy(RELEASE_NAMESPACE)))
        apiserver = site.spawn(
            "kube-apiserver",
            [
                str(components.KUBERNETES.binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
                "--bind-address=0.0.0.0",
                f"--advertise-address={network.address}",
                f"--secure-port={API_PORT}",
                f"--tls-cert-file={self.pki_dir / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki_dir / 'apiserver.key'}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={self.pki_dir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={network.service_cidr}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--kubelet-client-certificate={self.pki_dir / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={self.pki_dir / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki.ca_cert}",
                # logs and exec reach the kubelet at its address, not through a DNS name
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--requestheader-client-ca-file={pki.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_cert}",
                f"--proxy-client-key-file={pki.front_proxy_key}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=true",
                "--profiling=false",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={site.logs / AUDIT_LOG}",
                "--audit-log-format=json",
                "--audit-log-maxsize=100",
                "--audit-log-maxbackup=1",
                "--v=1",
            ],
        )
        site.endpoints.kube_api = f"https://{network.address}:{API_PORT}"
        kubeconfig = site.directory / "kubeconfig"
        write_kubeconfig(
            kubeconfig, site.endpoints.kube_api, pki.ca_cert, {"token": site.admin_token}
        )
        site.endpoints.kubeconfig = str(kubeconfig)
        apiserver.wait_healthy(lambda: site.api_ok("/readyz"), 120)

    # -- the node ------------------------------------------------------------------------
    def _start_runtime(self) -> None:
        """containerd, then the images, which the kubelet needs before its first pod."""
        site = self.site
        node_dir = site.node.directory
        cni = node_dir / "cni"
        cni.mkdir(exist_ok=True)
        (cni / "10-aios.conflist").write_text(json.dumps(cni_network(self.network), indent=2))
        images = self.site.images = ensure_images()
        config = node_dir / "containerd.toml"
        config.write_text(
            containerd_config(node_dir / "containerd", cni, images["pause"].reference)
        )
        binaries = components.CONTAINERD.binary().parent
        containerd = site.spawn(
            "containerd",
            [str(binaries / "containerd"), f"--config={config}", "--log-level=warn"],
            env={"PATH": f"{binaries}:/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        containerd.wait_healthy(lambda: bool(self.ctr("version")), 60)
        present = set(self.ctr("images", "ls", "--quiet").split())
        for image in images.values():
            pinned = image.pinned_reference
            if pinned in present:
                continue
            self.ctr("images", "import", str(image.archive), timeout=600)
            # Pods name images by digest (repository@sha256:...), as a registry pull records
            # them; an import records only the tag.
            self.ctr("images", "tag", "--force", image.reference, pinned)

    def ctr(self, *args: str, timeout: float = 30) -> str:
        """containerd's own client, in the node's namespaces, for Kubernetes' images."""
        ctr = components.CONTAINERD.binary().parent / "ctr"
        argv = self.site.node.enter(
            [str(ctr), f"--address={CONTAINERD_SOCKET}", "--namespace=k8s.io", *args]
        )
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise ComponentFailed(
                "containerd", f"ctr {' '.join(args)}: {result.stderr.strip()}", None
            )
        return result.stdout

    def _start_node(self, pki: SitePki) -> None:
        site, network, d = self.site, self.network, self.site.node.directory
        server = f"https://{network.address}:{API_PORT}"
        kubelet_kubeconfig, proxy_kubeconfig = d / "kubelet.kubeconfig", d / "proxy.kubeconfig"
        write_kubeconfig(kubelet_kubeconfig, server, pki.ca_cert, self._client("kubelet-client"))
        write_kubeconfig(proxy_kubeconfig, server, pki.ca_cert, self._client("kube-proxy"))
        kubelet_file, proxy_file = d / "kubelet.yaml", d / "kube-proxy.yaml"
        kubelet_file.write_text(to_json(kubelet_config(network, self.pki_dir)))
        proxy_file.write_text(to_json(kube_proxy_config(network, proxy_kubeconfig)))
        k8s = components.KUBERNETES
        path = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # iptables, mount, runc
        site.spawn(
            "kubelet",
            [
                str(k8s.binary("kubelet")),
                f"--config={kubelet_file}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={network.address}",
                f"--node-labels=aios.dev/site-node={network.index}",
                "--v=1",
            ],
            env=path,
        )
        site.spawn(
            "kube-proxy", [str(k8s.binary("kube-proxy")), f"--config={proxy_file}"], env=path
        )

    def _client(self, stem: str) -> dict[str, str]:
        return {
            "client-certificate": str(self.pki_dir / f"{stem}.crt"),
            "client-key": str(self.pki_dir / f"{stem}.key"),
        }

    def _node_ready(self) -> bool:
        """Healthy as ``health`` has it: Ready, under no pressure, and schedulable (the
        not-ready taint is gone, the node controller's job)."""
        return not health.node_problems(self.site.get("node", NODE_NAME))

    def _dns_ready(self) -> bool:
        deployment = self.site.get("deployment", "coredns", "-n", "kube-system")
        return bool(deployment.get("status", {}).get("availableReplicas"))

    def _dns_objects(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "List",
            "items": cluster_dns(self.network, self.site.images["coredns"].pinned_reference),
        }


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "aios-local",
                "clusters": [
                    {
                        "name": "aios-local",
                        "cluster": {
                            "server": server,
                            "certificate-authority-data": base64.b64encode(
                                ca.read_bytes()
                            ).decode(),
                        },
                    }
                ],
                "users": [{"name": "user", "user": user}],
                "contexts": [
                    {
                        "name": "aios-local",
                        "context": {
                            "cluster": "aios-local",
                            "user": "user",
                            "namespace": "default",
                        },
                    }
                ],
            },
            indent=2,
        )
    )
    path.chmod(0o600)


def static_tokens(path: Path, people: Path) -> dict[str, str]:
    """The API server's token file (``--token-auth-file``): the admin's (system:masters) and
    one per local person, each kept across restarts as the kubeconfig is; a person's token
    is also written to ``people/NAME.token``. Returns each user's token."""
    groups = {ADMIN_TOKEN_USER: ("system:masters",), **LOCAL_PEOPLE}
    lines = path.read_text().splitlines() if path.exists() else []
    known = {row[1]: row[0] for row in csv.reader(lines)}
    tokens = {user: known.get(user) or os.urandom(16).hex() for user in groups}
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for user, token in tokens.items():
        writer.writerow([token, user, user, ",".join(groups[user])])
    path.write_text(text.getvalue())
    path.chmod(0o600)
    people.mkdir(exist_ok=True)
    for user in LOCAL_PEOPLE:
        (people / f"{user}.token").write_text(tokens[user] + "\n")
        (people / f"{user}.token").chmod(0o600)
    return tokens
