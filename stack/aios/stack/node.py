"""The local site's node: its own network and mount namespace, as kind gives a node a container.

Everything the site runs (the control plane, containerd, the kubelet, kube-proxy, Kafka,
Temporal, OPA, Mosquitto) runs inside one network namespace and one mount namespace that a
*holder* process keeps open:

- the network namespace has one veth link to the host (``10.251.<i>.2`` inside,
  ``10.251.<i>.1`` on the host), and the host routes the site's pod and Service ranges
  through it, so tests and a user's shell reach Kafka, the API server, pods and
  ClusterIPs the way they would reach a cluster's;
- the mount namespace puts a per-site directory over ``/run`` and an overlay over ``/var``,
  so the kubelet, containerd and the CNI plugins write there, not on the host; a fresh
  ``/sys`` shows the namespace's own network devices;
- the kubelet's pods live under their own cgroup (``/aios-site-<i>`` in every hierarchy).

Several sites share a machine (a test run beside ``make run``): each takes a free index
``<i>``, which gives it its own addresses, pod range and Service range. ``teardown`` leaves
the host as it was: no process, mount, namespace, link, route or cgroup of the site remains.
Namespaces are not named in ``/run/netns``: they live as long as a process of the site,
so nothing on the host outlives the last one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from aios.stack.components import cache_root, exclusive
from aios.stack.process import ComponentFailed, ManagedProcess

NODE_NAME = "aios-node"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = Path("/sys/fs/cgroup")
INDICES = range(1, 250)
KERNEL_TUNABLES = {
    # What the kubelet insists on (it writes them otherwise). They are global, not per
    # namespace: inside the node's mount namespace the kubelet reads these values from
    # files bound over /proc/sys, and the host keeps its own.
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


class NodeFailed(RuntimeError):
    """The node's namespaces could not be set up or torn down; says which step."""


@dataclass(frozen=True)
class NodeNetwork:
    """The addresses of site number ``index``: distinct per site, so several coexist."""

    index: int

    @property
    def host_link(self) -> str:
        return f"aios{self.index}"

    @property
    def host_address(self) -> str:
        """The host's end of the link: how pods reach a server a test runs on the host."""
        return f"10.251.{self.index}.1"

    @property
    def address(self) -> str:
        """The node's address: the API server, the kubelet and the site's servers."""
        return f"10.251.{self.index}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.96.{self.index}.0/24"

    @property
    def api_service_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP (the first of the range)."""
        return f"10.96.{self.index}.1"

    @property
    def dns_ip(self) -> str:
        """The ``kube-dns`` Service's ClusterIP, which the kubelet writes into every pod."""
        return f"10.96.{self.index}.10"

    @property
    def cgroup(self) -> str:
        return f"aios-site-{self.index}"


@dataclass
class NodeState:
    """What a later ``aiosctl down`` needs to find the node's leftovers."""

    index: int
    holder_pid: int
    mount_namespace: str
    network_namespace: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> NodeState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None


def run(argv: list[str], what: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise NodeFailed(f"{what}: {' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def allocation_lock() -> contextlib.AbstractContextManager[None]:
    """One site at a time picks its index and claims it (its claim file, then its link)."""
    return exclusive(cache_root() / "node-allocation.lock")


def index_taken(index: int, links: set[str], routes: str) -> bool:
    """Whether the host has a link or a route of site number ``index`` (anyone's)."""
    network = NodeNetwork(index)
    return network.host_link in links or any(
        prefix in routes for prefix in (f"10.251.{index}.", network.pod_cidr, network.service_cidr)
    )


class IndexClaims:
    """Which site directory holds which index, kept under the cache: a stopped site has no
    link or route, yet its cluster keeps the addresses of its index, so no other site may
    take that index while the stopped site's directory says it is its own."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def held_by_others(self, directory: Path) -> dict[int, Path]:
        """Indexes claimed by another site directory that still records that index (a
        claim whose directory was removed, or took another index, has lapsed)."""
        claims = self.root.glob("[0-9]*") if self.root.is_dir() else ()
        return {
            int(claim.name): holder
            for claim in claims
            if (holder := Path(claim.read_text().strip())) != directory.resolve()
            and recorded_index(holder) == int(claim.name)
        }

    def claim(self, index: int, directory: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / str(index)).write_text(f"{directory.resolve()}\n")


INDEX_FILE = "index"
"""In a node directory: the site's index, kept across ``down`` and ``up`` (its cluster's
addresses)."""


def recorded_index(directory: Path) -> int | None:
    """The index a node directory keeps, if it has one."""
    try:
        return int((directory / INDEX_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def free_index(own: int | None, held: dict[int, Path]) -> int:
    """``choose_index`` on this host's links and routes."""
    links = set(os.listdir("/sys/class/net"))
    return choose_index(own, links, run(["ip", "-4", "route", "show"], "list routes"), held)


def choose_index(own: int | None, links: set[str], routes: str, held: dict[int, Path]) -> int:
    """The site's own index when it has one (its cluster stored the addresses derived from
    it: Service IPs cannot change), else the first index whose link and routes do not exist
    on the host and that no other site directory holds (``held``: index → directory)."""
    if own is not None:
        if own in held:
            raise NodeFailed(
                f"this site's index {own} is also recorded by the site in {held[own]}; "
                "remove one of the two sites' directories"
            )
        if index_taken(own, links, routes):
            raise NodeFailed(
                f"this site's addresses (site index {own}: 10.251.{own}.0/24, Services "
                f"{NodeNetwork(own).service_cidr}) are in use by another site on this machine; "
                "stop that site first"
            )
        return own
    for index in INDICES:
        if index not in held and not index_taken(index, links, routes):
            return index
    raise NodeFailed("no free site index: 249 sites on this machine?")


MODEL_MIRROR = Path("/var/lib/aios/model-mirror")
"""Where the node offers the site's model mirror to pods (a hostPath any pod may read: the
mirror itself lives under the user's home, which pods could not traverse)."""


def mount_script(directory: Path, mirror: Path | None) -> str:
    """What the holder runs inside the new namespaces first: the node's own /run, /var and
    /sys, the model mirror, and the kernel tunables the kubelet wants."""
    run_dir, var, cgroups, tunables = (
        directory / "run",
        directory / "var",
        directory / "cgroup-move",
        directory / "kernel",
    )
    lines = [
        "set -e",
        f"mount --bind {run_dir} /run",
        f"mount -t overlay overlay -o lowerdir=/var,upperdir={var}/upper,workdir={var}/work /var",
        f"mount --rbind /sys/fs/cgroup {cgroups}",
        "mount -t sysfs sysfs /sys",
        f"mount --move {cgroups} /sys/fs/cgroup",
    ]
    if mirror is not None:
        lines += [
            f"mount --bind {mirror} {MODEL_MIRROR}",
            f"mount -o remount,bind,ro {MODEL_MIRROR}",
        ]
    lines += [
        f"mount --bind {tunables / k.replace('/', '.')} /proc/sys/{k}" for k in KERNEL_TUNABLES
    ]
    lines += [
        "ip link set lo up",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        # Pods talking to a Service whose endpoint sits on the same bridge: the reply must
        # pass iptables to be translated back.
        "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables",
    ]
    return "\n".join(lines) + "\n"


def namespace_id(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def processes_in(mount_namespace: str) -> list[int]:
    """Every process whose mount namespace is the node's (the holder, the site, shims)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry}/ns/mnt") == mount_namespace:
                found.append(int(entry))
    return found


def cgroup_dirs(name: str) -> list[Path]:
    """The node's cgroup in every hierarchy of this machine (v1 controllers and v2)."""
    return [h / name for h in sorted(CGROUP_ROOT.iterdir()) if h.is_dir() and not h.is_symlink()]


def cgroup_processes(name: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(name):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def kill_all(pids: Iterator[int] | list[int] | set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_gone(find: Callable[[], object], timeout: float) -> bool:
    """Poll ``find()`` (a collection of what is left) until it is empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not find():
            return True
        time.sleep(0.1)
    return False


class Node:
    """The namespaces of one site's node, rooted at ``directory`` (``<site>/node``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state_file = directory / "node.json"
        self.holder: ManagedProcess | None = None
        self.network = NodeNetwork(0)
        self.state: NodeState | None = None

    # -- set-up --------------------------------------------------------------------------
    def create(self, mirror: Path | None = None) -> NodeNetwork:
        """Take a free index, start the holder in new namespaces, link it to the host;
        ``mirror``: the model buckets the node offers at ``MODEL_MIRROR``."""
        leftover = NodeState.load(self.state_file)
        if leftover is not None:
            teardown(leftover)  # a site that died without `aiosctl down`
        self._prepare_directories()
        own = leftover.index if leftover else recorded_index(self.directory)
        claims = IndexClaims(cache_root() / "site-indexes")
        with allocation_lock():
            index = free_index(own, claims.held_by_others(self.directory))
            (self.directory / INDEX_FILE).write_text(f"{index}\n")
            claims.claim(index, self.directory)
            self.network = NodeNetwork(index)
            self.holder = self._start_holder(index, mirror)
            pid = self.holder.pid
            self.state = NodeState(
                index=index,
                holder_pid=pid,
                mount_namespace=namespace_id(pid, "mnt"),
                network_namespace=namespace_id(pid, "net"),
            )
            self.state.save(self.state_file)
            self._link(pid)
        self._create_cgroups()
        return self.network

    def _prepare_directories(self) -> None:
        """A fresh /run and /var for the node: nothing of a previous run's pods survives
        (as after a reboot); images, kept by containerd elsewhere, do."""
        for name in ("run", "var", "cgroup-move"):
            stale = self.directory / name
            if stale.exists():
                run(["rm", "-rf", "--one-file-system", str(stale)], f"clear {stale}")
        for name in ("run", "var/upper", "var/work", "cgroup-move", "kernel"):
            (self.directory / name).mkdir(parents=True, exist_ok=True)
        (self.directory / "var/upper" / MODEL_MIRROR.relative_to("/var")).mkdir(parents=True)
        for key, value in KERNEL_TUNABLES.items():
            (self.directory / "kernel" / key.replace("/", ".")).write_text(value + "\n")

    def _start_holder(self, index: int, mirror: Path | None) -> ManagedProcess:
        """The process that keeps the node's namespaces (``hold``), dying with its parent."""
        ready = self.directory / "ready"
        ready.unlink(missing_ok=True)
        argv = ["unshare", "--net", "--mount", "--propagation", "private"]
        argv += [sys.executable, "-m", "aios.stack.node", "hold", str(self.directory), str(index)]
        holder = ManagedProcess(
            "node", [*argv, *([str(mirror)] if mirror else [])], self.directory / "holder.log"
        ).start()
        try:
            holder.wait_healthy(ready.exists, 30)
        except ComponentFailed as error:
            raise NodeFailed(f"the node's namespaces could not be set up: {error}") from error
        return holder

    def _link(self, pid: int) -> None:
        n = self.network
        inside = ["nsenter", f"--target={pid}", "--net", "--"]
        for argv in (
            [
                "ip",
                "link",
                "add",
                n.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                str(pid),
            ],
            ["ip", "addr", "add", f"{n.host_address}/30", "dev", n.host_link],
            ["ip", "link", "set", n.host_link, "up"],
            [*inside, "ip", "addr", "add", f"{n.address}/30", "dev", "eth0"],
            [*inside, "ip", "link", "set", "eth0", "up"],
            [*inside, "ip", "route", "add", "default", "via", n.host_address],
            # The host reaches pods and ClusterIPs as a cluster's network would route them;
            # the routes go with the link.
            ["ip", "route", "add", n.pod_cidr, "via", n.address, "dev", n.host_link],
            ["ip", "route", "add", n.service_cidr, "via", n.address, "dev", n.host_link],
        ):
            run(argv, "link the node to the host")

    def _create_cgroups(self) -> None:
        for path in cgroup_dirs(self.network.cgroup):
            path.mkdir(exist_ok=True)
            if path.parent.name == "cpuset":  # a v1 cpuset starts empty: give it the parent's
                for key in ("cpuset.cpus", "cpuset.mems"):
                    (path / key).write_text((path.parent / key).read_text())

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the node's namespaces."""
        assert self.state is not None, "the node was not created"
        return ["nsenter", f"--target={self.state.holder_pid}", "--net", "--mount", "--", *argv]

    # -- tear-down -----------------------------------------------------------------------
    def teardown(self) -> None:
        """Ask the holder to clear the node and go; whatever it could not do is done here.
        The namespaces, the link and its routes go with the holder."""
        if self.holder is not None:
            self.holder.stop(grace=60)
        if self.state is not None:
            teardown(self.state)
            network = self.network
            if not wait_gone(lambda: network.host_link in os.listdir("/sys/class/net"), 10):
                run(["ip", "link", "del", network.host_link], "remove the node's link")
        self.state, self.holder = None, None
        self.state_file.unlink(missing_ok=True)


def hold(directory: Path, index: int, mirror: Path | None) -> None:
    """The holder (``python -m aios.stack.node hold DIR INDEX [MIRROR]``, started by
    ``unshare`` in the node's new namespaces): mount the node's directories, say so, then
    keep the namespaces until SIGTERM — which its parent's death sends too — and on the way
    out stop everything left in them, so a killed supervisor leaves nothing behind.

    The signals are blocked and taken with ``sigwait``, not by a handler: a second SIGTERM
    (the parent's death and ``aiosctl down`` both send one) ran a handler inside the first
    one's ``Event.set`` and deadlocked on its lock, and the node was never torn down."""
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # pending until sigwait, from here on
    subprocess.run(["sh", "-e", "-c", mount_script(directory, mirror)], check=True)
    (directory / "ready").touch()
    signal.sigwait(stop)
    mine = namespace_id(os.getpid(), "mnt")
    teardown(NodeState(index, os.getpid(), mine, namespace_id(os.getpid(), "net")))


KILLED_EXIT_SECONDS = 60.0
"""How long SIGKILLed processes may take to be gone: a JVM or a server with gigabytes to
free takes seconds on a busy machine, and ``down`` must not return before they are."""


def teardown(state: NodeState, grace: float = 10) -> None:
    """Stop what is left of a node (but the caller) and remove its cgroups; its namespaces,
    link and routes go with its last process. Pods first, so no container outlives its
    runtime."""
    network = NodeNetwork(state.index)
    kill_all(cgroup_processes(network.cgroup), signal.SIGKILL)
    wait_gone(lambda: cgroup_processes(network.cgroup), grace)

    def others() -> list[int]:
        return [p for p in processes_in(state.mount_namespace) if p != os.getpid()]

    kill_all(others(), signal.SIGTERM)
    if not wait_gone(others, grace):
        kill_all(others(), signal.SIGKILL)
        wait_gone(others, KILLED_EXIT_SECONDS)
    for top in cgroup_dirs(network.cgroup):
        remove_cgroup(top)
    left = [f"{pid} ({command_of(pid)})" for pid in others()]
    if left:
        raise NodeFailed(f"processes left in the node: {', '.join(left)}")
    stray = [str(p) for p in cgroup_dirs(network.cgroup) if p.exists()]
    if stray:
        raise NodeFailed(f"cgroups left behind: {', '.join(stray)}")


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "gone"


def remove_cgroup(path: Path, attempts: int = 50) -> None:
    """Depth first; a cgroup whose last process just died may be busy for a moment."""
    if not path.exists():
        return
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        remove_cgroup(child, attempts)
    for _ in range(attempts):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


if __name__ == "__main__":
    _, command, directory, index, *mirror = sys.argv
    assert command == "hold", "usage: python -m aios.stack.node hold DIR INDEX [MIRROR]"
    hold(Path(directory), int(index), Path(mirror[0]) if mirror else None)
