"""The container images of aios and of the real node's own pods, built here.

The real node's containerd runs pods from images, and a site has no registry and no Docker
daemon: so the images are built on this machine by buildah (``bud --isolation chroot``)
from ``images/<name>/Containerfile``, FROM a Debian bookworm root file system that
mmdebstrap extracts from Debian's packages, with wheels from PyPI pinned by
``hack/constraints.txt`` and binaries built from the Go module proxy, and handed over as OCI
archives (``ctr images import``).

Builds are reproducible: fixed timestamps (buildah ``--timestamp 0``, SOURCE_DATE_EPOCH for
mmdebstrap and the project's wheel), byte code compiled hash-checked with a fixed hash seed.
So an image's digest depends on its inputs only, and the cache is keyed by a digest of
those inputs (Containerfile, base recipe, pinned requirements, project sources, component
versions, tools): a second run with the same inputs builds nothing. Dependencies are
installed in a layer before the project's wheel, so a change to aios's code rebuilds that
last layer only (buildah's layer cache).

Everything lives under ``$AIOS_CACHE/images``; buildah runs in a private mount namespace
with its run root on a tmpfs there, so no mount outlives it; a file lock serialises builds
of concurrent processes.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from aios.stack.components import (
    HACK,
    REPO_ROOT,
    Component,
    ComponentUnavailable,
    cache_root,
)

SOURCES = REPO_ROOT / "images"
REGISTRY = "ghcr.io/aios-dev"
SOURCE_URL = "https://github.com/aios-dev/aios"
NAMES = ("aios", "aios-edge", "tritonserver", "coredns", "pause")
TRITON_VERSION = "2.51.0"  # the tritonserver in nvidia-pytriton 0.7.0
PAUSE_VERSION = "1.0.0"
COREDNS = Component("coredns", "COREDNS_VERSION")

# The one instant every file and image is dated: builds are reproducible.
EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
WHEEL_EPOCH = 315532800  # zip cannot store times before 1980

# The folders holding the portions of the namespace package aios (pyproject.toml's list).
PROJECT_ROOTS = (
    "crds",
    "operator",
    "workflows",
    "connectors",
    "runner",
    "edge-agent",
    "cli",
    "stack",
)
# What the edge agent imports (tests/unit/test_images.py checks it against its imports).
EDGE_REQUIREMENTS = ("confluent-kafka", "numpy", "paho-mqtt", "prometheus-client", "pydantic")
# The installer: its wheel is in every wheelhouse and is run from there, so it never lands
# in an image.
PIP = "pip==26.3"
# Wheels for the images' interpreter (Debian bookworm: CPython 3.11, glibc 2.36), whatever
# the host's Python.
WHEEL_TARGET = (
    "--only-binary=:all:",
    "--implementation=cp",
    "--python-version=3.11",
    "--abi=cp311",
    *(f"--platform=manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "--platform=manylinux2014_x86_64",
    "--platform=manylinux2010_x86_64",
    "--platform=manylinux1_x86_64",
)

# Base root file systems: Debian packages extracted, not installed (see images/base/).
BASE_OF = {"aios": "python", "aios-edge": "python", "tritonserver": "python-embed"}
SUITE = "bookworm"
MMDEBSTRAP_OPTIONS = (
    "--variant=extract",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/lintian/*",
    "--dpkgopt=path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*",
)
# What mmdebstrap leaves that an image must not carry: the host's name and resolver, device
# nodes (the runtime provides /dev), apt's sources and state (there is no apt).
BASE_DROPPED = (
    "./etc/hostname",
    "./etc/resolv.conf",
    "./etc/apt",
    "./var/cache/apt",
    "./var/lib/apt",
    "./var/log/apt",
)

# Debian packages the build runs (buildah, mmdebstrap, gcc for pause, skopeo to push them)
# and how each is found; those that shape an image are part of every key.
TOOLS = {
    "buildah": "buildah",
    "mmdebstrap": "mmdebstrap",
    "skopeo": "skopeo",
    "gcc": "gcc",
    "libc6-dev": "/usr/lib/x86_64-linux-gnu/libc.a",
}
BUILD_PACKAGES = ("buildah", "mmdebstrap", "gcc", "libc6-dev")


@dataclass(frozen=True)
class BuiltImage:
    """One built image: ``archive`` is an OCI archive (``ctr images import`` takes it);
    ``size`` is what a pull transfers (compressed layers, config, manifest), in bytes;
    ``unpacked_size`` the layers' uncompressed size."""

    name: str
    reference: str
    digest: str
    archive: Path
    size: int
    unpacked_size: int

    @property
    def pinned_reference(self) -> str:
        """``repository@sha256:…``: the image exactly, as a pod may name it."""
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


# -- names -------------------------------------------------------------------------------


@cache
def project_version() -> str:
    return str(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"])


def version(name: str) -> str:
    """The tag of an image: aios's version, or the version of what it packages."""
    if name in ("aios", "aios-edge"):
        return project_version()
    if name == "tritonserver":
        return TRITON_VERSION
    if name == "coredns":
        return COREDNS.version.removeprefix("v")
    if name == "pause":
        return PAUSE_VERSION
    raise ValueError(f"unknown image {name!r}: one of {', '.join(NAMES)}")


def reference(name: str) -> str:
    """The name an image is built, imported and pushed as, e.g. ghcr.io/aios-dev/aios:0.1.0."""
    return f"{REGISTRY}/{name}:{version(name)}"


def labels(name: str, commit: str) -> dict[str, str]:
    """The OCI labels our build adds to those in the Containerfile (which a Docker build
    has too): what differs per build, so buildah's layer cache never reuses a stale one."""
    return {
        "org.opencontainers.image.version": version(name),
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.created": CREATED,
    }


# -- inputs ------------------------------------------------------------------------------


def digest_files(files: Iterable[Path], root: Path) -> str:
    """One digest of files' paths (relative to ``root``) and contents, not of their mtimes."""
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(path.relative_to(root).as_posix().encode() + b"\0")
        sha.update(hashlib.sha256(path.read_bytes()).digest())
    return sha.hexdigest()


def project_files(root: Path = REPO_ROOT) -> list[Path]:
    """What goes into aios's wheel: the packages' modules, pyproject.toml, the README."""
    files = [root / "pyproject.toml", root / "README.md"]
    for portion in PROJECT_ROOTS:
        modules = (root / portion / "aios").rglob("*.py")
        files += (p for p in modules if "__pycache__" not in p.parts)
    return files


def policy_files(root: Path = REPO_ROOT) -> list[Path]:
    """The policy library the operator loads into OPA (its tests stay out)."""
    return [p for p in (root / "policies").rglob("*.rego") if not p.stem.endswith("_test")]


def image_files(name: str, root: Path = REPO_ROOT) -> list[Path]:
    """The image's own recipe: its folder under images/."""
    return [p for p in (root / "images" / name).rglob("*") if p.is_file()]


def base_files(base: str, root: Path = REPO_ROOT) -> list[Path]:
    folder = root / "images" / "base"
    return [folder / f"{base}.packages", folder / "customize.sh", folder / "Containerfile"]


def constraints(root: Path = REPO_ROOT) -> dict[str, str]:
    """The pins of hack/constraints.txt, by canonical name."""
    pins: dict[str, str] = {}
    for line in (root / "hack" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, pinned = line.split("==", 1)
            pins[canonicalize_name(name)] = pinned.strip()
    return pins


def requirements(name: str, root: Path = REPO_ROOT) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What an image's wheelhouse holds: requirements installed with their dependencies,
    and wheels used on their own (pip, the pytriton wheel Triton is taken from)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    if name == "aios":
        return tuple(project["dependencies"] + project["optional-dependencies"]["model-server"]), (
            PIP,
        )
    if name == "aios-edge":
        return EDGE_REQUIREMENTS, (PIP,)
    if name == "tritonserver":
        return ("numpy",), (PIP, "nvidia-pytriton")
    return (), ()


def wheelhouse_key(name: str, root: Path = REPO_ROOT) -> str:
    """What an image's wheelhouse depends on: its requirements, the pins, the target."""
    with_deps, alone = requirements(name, root)
    return _digest_json(
        {
            "requirements": with_deps,
            "alone": alone,
            "constraints": sorted(constraints(root).items()),
            "target": WHEEL_TARGET,
        }
    )


def apt_sources() -> list[Path]:
    """The host's apt sources for Debian bookworm (one-line or deb822 files), which
    mmdebstrap reads: the image's packages come from where the host's come from."""
    listed = [Path("/etc/apt/sources.list")]
    for pattern in ("*.list", "*.sources"):
        listed += sorted(Path("/etc/apt/sources.list.d").glob(pattern))
    suite = re.compile(rf"^(?!\s*#).*(\s|^){SUITE}(-\w+)?(\s|$)", re.MULTILINE)
    return [p for p in listed if p.is_file() and suite.search(p.read_text())]


def base_key(base: str, root: Path = REPO_ROOT) -> str:
    """What a base root file system depends on: its recipe, the host's Debian mirror."""
    return _digest_json(
        {
            "recipe": digest_files(base_files(base, root), root),
            "mmdebstrap": [*MMDEBSTRAP_OPTIONS, SUITE, *BASE_DROPPED],
            "sources": [p.read_text() for p in apt_sources()],
            "tools": tool_versions().get("mmdebstrap", ""),
        }
    )


def source_paths(name: str) -> list[str]:
    """Every repository path an image is built from (for its revision label)."""
    paths = [f"images/{name}", "stack/aios/stack/images.py"]
    if name in BASE_OF:
        paths += ["images/base", "hack/constraints.txt"]
    if name in ("aios", "aios-edge"):
        paths += ["pyproject.toml", "README.md", *PROJECT_ROOTS]
    if name == "aios":
        paths.append("policies")
    if name == "coredns":
        paths += ["hack/versions.env", "hack/obtain.sh"]
    return paths


def revision(paths: Sequence[str], root: Path = REPO_ROOT) -> str:
    """The last commit that touched ``paths``, ``-dirty`` if they have changes not committed."""
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run(
            [*git, "log", "-1", "--format=%H", "--", *paths], capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", *paths], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not commit:
        return "unknown"
    return commit + ("-dirty" if changed else "")


def image_inputs(name: str) -> dict[str, str]:
    """Everything an image's content depends on, each as a digest or a version."""
    inputs = {
        "reference": reference(name),
        "recipe": digest_files(image_files(name), REPO_ROOT),
        "build": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "tools": _digest_json(tool_versions()),
        "revision": revision(source_paths(name)),
    }
    if name in BASE_OF:
        inputs["base"] = base_key(BASE_OF[name])
        inputs["wheelhouse"] = wheelhouse_key(name)
    if name in ("aios", "aios-edge"):
        inputs["project"] = digest_files(project_files(), REPO_ROOT)
    if name == "aios":
        inputs["policies"] = digest_files(policy_files(), REPO_ROOT)
    if name == "coredns":
        inputs["binary"] = _file_digest(COREDNS.binary())
    return inputs


def input_key(inputs: dict[str, str]) -> str:
    return _digest_json(inputs)[:16]


@cache
def tool_versions() -> dict[str, str]:
    """The Debian versions of the build tools (part of every key: they shape the output)."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *BUILD_PACKAGES],
        capture_output=True,
        text=True,
    )
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


def _digest_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


# -- the cache ---------------------------------------------------------------------------


def work_dir() -> Path:
    return cache_root() / "images"


def _record(name: str, key: str) -> Path:
    return work_dir() / "archives" / f"{name}-{key}.json"


def _cached(name: str, key: str) -> BuiltImage | None:
    try:
        data = json.loads(_record(name, key).read_text())
    except (OSError, ValueError):
        return None
    built = BuiltImage(**{**data, "archive": Path(data["archive"])})
    return built if built.archive.exists() else None


@contextmanager
def _locked() -> Iterator[None]:
    """One build at a time across processes (a test run beside ``make run``)."""
    work_dir().mkdir(parents=True, exist_ok=True)
    with (work_dir() / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_images(names: Collection[str] | None = None) -> dict[str, BuiltImage]:
    """The requested images (all by default), built first if the cache lacks them."""
    wanted = list(NAMES if names is None else names)
    for name in wanted:
        version(name)  # rejects an unknown name
    if _missing_tools():
        with _locked():
            _install_tools()
    found = {name: _cached(name, input_key(image_inputs(name))) for name in wanted}
    if all(found.values()):
        return {name: built for name, built in found.items() if built}
    with _locked():
        for name in wanted:
            key = input_key(image_inputs(name))
            found[name] = _cached(name, key) or _build(name, key)
        _prune()
    return {name: built for name, built in found.items() if built}


# -- tools and commands ------------------------------------------------------------------


def _missing_tools() -> list[str]:
    return [
        package
        for package, probe in TOOLS.items()
        if not (Path(probe).exists() if probe.startswith("/") else shutil.which(probe))
    ]


def _install_tools() -> None:
    """Install the missing build tools from Debian (as ``hack/obtain.sh`` does mosquitto)."""
    missing = _missing_tools()
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ComponentUnavailable(
                f"could not install {' '.join(missing)} with apt-get:\n{result.stderr[-2000:]}"
            )
    tool_versions.cache_clear()


def _run(command: Sequence[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run one build step with its output appended to ``log``; on failure raise
    ComponentUnavailable with the log's tail. Interrupted, it stops the whole step; and
    the step gets SIGTERM if this process dies (setpriv's parent-death signal), so no
    build outlives its caller."""
    with log.open("ab") as out:
        out.write(f"\n$ {shlex.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            code = process.wait()
        except BaseException:
            _stop(process)
            raise
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ComponentUnavailable(f"{what} failed (exit {code}); the end of {log}:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
            process.wait(grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@cache
def _storage_driver() -> str:
    """overlay (much faster) where the kernel and file system allow it, else vfs."""
    root = work_dir() / "storage" / "overlay"
    (root / "run").mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        [*_private("overlay"), "info"], capture_output=True, text=True, env=_buildah_env()
    )
    if probe.returncode == 0 and '"GraphDriverName": "overlay"' in probe.stdout:
        return "overlay"
    return "vfs"


# Where buildah writes whatever its flags say: the image library's blob-info cache
# (/var/lib/containers/cache, for root) and the network backend's run directory
# (/run/containers). In buildah's namespace they get a copy-on-write overlay whose upper
# layer is in the cache, so the host never sees them.
SHADOWED = ("/var/lib", "/run")


def _private(driver: str) -> list[str]:
    """buildah in a mount namespace of its own, its run root on a tmpfs there and
    SHADOWED overlaid: every mount it makes goes when it exits, no state of a killed run
    survives it, and nothing is written outside the cache."""
    store = work_dir() / "storage" / driver
    (store / "run").mkdir(parents=True, exist_ok=True)
    script = ["set -e"]
    for target in SHADOWED:
        if work_dir().resolve().is_relative_to(target):
            continue  # the cache itself lives there: overlaying it would hide the storage
        layer = work_dir() / "shadow" / target.strip("/").replace("/", "-")
        shutil.rmtree(layer, ignore_errors=True)
        (layer / "upper").mkdir(parents=True)
        (layer / "work").mkdir()
        options = f"lowerdir={target},upperdir={layer / 'upper'},workdir={layer / 'work'}"
        script.append(f"mount -t overlay overlay -o {shlex.quote(options)} {target}")
    script.append(f"mount -t tmpfs -o mode=0700 tmpfs {shlex.quote(str(store / 'run'))}")
    script.append('exec "$@"')
    return [
        *("unshare", "--mount", "--propagation", "private", "--", "sh", "-c"),
        "\n".join(script),
        "buildah",
        *("buildah", "--root", str(store / "root"), "--runroot", str(store / "run")),
        *("--storage-driver", driver),
    ]


def _buildah_env() -> dict[str, str]:
    tmp = work_dir() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp), "BUILDAH_ISOLATION": "chroot"}


def _buildah(args: Sequence[str], log: Path, what: str) -> None:
    _run([*_private(_storage_driver()), *args], log, what, env=_buildah_env())


# -- ingredients -------------------------------------------------------------------------


def _base(base: str, log: Path) -> str:
    """The base image in buildah's store (its root file system made once per key)."""
    key = base_key(base)[:16]
    folder = work_dir() / "base" / f"{base}-{key}"
    rootfs = folder / "rootfs.tar"
    if not rootfs.exists():
        started = time.monotonic()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        packages = [
            line.strip()
            for line in (SOURCES / "base" / f"{base}.packages").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        sources = [str(p) for p in apt_sources()] or ["http://deb.debian.org/debian"]
        hook = f'{shlex.quote(str(SOURCES / "base" / "customize.sh"))} "$1"'
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "TMPDIR": str(work_dir() / "tmp")}
        raw = folder / "mmdebstrap.tar"
        _run(
            [
                *("unshare", "--mount", "--propagation", "private", "--", "mmdebstrap"),
                *MMDEBSTRAP_OPTIONS,
                f"--include={','.join(packages)}",
                f"--extract-hook={hook}",
                *(SUITE, str(raw), *sources),
            ],
            log,
            f"mmdebstrap (the {base} base)",
            env=env,
        )
        _strip_rootfs(raw, folder / "rootfs.part")
        raw.unlink()
        (folder / "rootfs.part").rename(rootfs)
        _note(f"base {base}: root file system made in {time.monotonic() - started:.0f} s")
    shutil.copy(SOURCES / "base" / "Containerfile", folder / "Containerfile")
    ref = f"localhost/aios-base-{base}:{key}"
    _buildah(
        [
            "bud",
            "--layers",
            f"--timestamp={EPOCH}",
            "--identity-label=false",
            "-t",
            ref,
            str(folder),
        ],
        log,
        f"the {base} base image",
    )
    return ref


def _strip_rootfs(source: Path, dest: Path) -> None:
    """Copy mmdebstrap's tarball without what an image must not carry (BASE_DROPPED)."""

    def dropped(name: str) -> bool:
        return name.startswith("./dev/") or any(
            name == p or name.startswith(p + "/") for p in BASE_DROPPED
        )

    with tarfile.open(source) as src, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        for member in src:
            if dropped(member.name.rstrip("/")):
                continue
            out.addfile(member, src.extractfile(member) if member.isfile() else None)


def _wheelhouse(name: str, log: Path) -> Path:
    """The image's wheels from PyPI, each pinned by hack/constraints.txt, and the lock file
    (requirements.txt, with hashes) that the image is installed from."""
    house = work_dir() / "wheels" / wheelhouse_key(name)[:16]
    if (house / ".complete").exists():
        house.touch()
        return house
    shutil.rmtree(house, ignore_errors=True)
    partial = house.with_name(house.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with_deps, alone = requirements(name)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    pip += ["--cache-dir", str(work_dir() / "pip"), "--dest", str(partial), *WHEEL_TARGET]
    pip += ["--constraint", str(HACK / "constraints.txt")]
    _run([*pip, *with_deps], log, f"pip download for {name}")
    locked = sorted(partial.glob("*.whl"))
    _run([*pip, "--no-deps", *alone], log, f"pip download for {name}")
    pins = {**constraints(), canonicalize_name("pip"): PIP.split("==")[1]}
    lines = []
    for wheel in sorted(partial.glob("*.whl")):
        dist, found, _, _ = parse_wheel_filename(wheel.name)
        if dist not in pins or Version(pins[dist]) != found:
            raise ComponentUnavailable(
                f"{wheel.name} is not pinned: add {dist}=={found} to hack/constraints.txt "
                "(an image must depend on its inputs only)"
            )
        if wheel in locked:
            lines.append(f"{dist}=={found} --hash=sha256:{_file_digest(wheel)}")
    (partial / "requirements.txt").write_text("\n".join(lines) + "\n")
    (partial / ".complete").touch()
    partial.rename(house)
    return house


def _project_wheel(log: Path) -> Path:
    """aios's wheel, built reproducibly from a copy of its sources (nothing written into
    the work tree)."""
    folder = work_dir() / "project" / digest_files(project_files(), REPO_ROOT)[:16]
    wheels = sorted(folder.glob("aios-*.whl"))
    if wheels:
        return wheels[0]
    shutil.rmtree(folder, ignore_errors=True)
    source = work_dir() / "tmp" / "project-source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for portion in PROJECT_ROOTS:
        shutil.copytree(
            REPO_ROOT / portion / "aios",
            source / portion / "aios",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(WHEEL_EPOCH)}
    _run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"),
            *("--no-deps", "--no-build-isolation", "--wheel-dir", str(folder), str(source)),
        ],
        log,
        "building aios's wheel",
        env=env,
    )
    shutil.rmtree(source)
    return sorted(folder.glob("aios-*.whl"))[0]


def _triton_tree(wheel: Path, dest: Path) -> None:
    """The nvidia-pytriton wheel's Triton, laid out as NVIDIA's /opt/tritonserver: bin/,
    lib/ (the wheel's libraries, found through tritonserver's RPATH $ORIGIN/../lib),
    backends/python with the stub for Python 3.11, caches/, the wheel's licence."""
    stub = "pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub"
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            path = info.filename
            if info.is_dir() or "__pycache__" in path:
                continue
            if path == stub:
                relative = "backends/python/triton_python_backend_stub"
            elif path.startswith("pytriton/tritonserver/") and "/python_backend_stubs/" not in path:
                relative = path.removeprefix("pytriton/tritonserver/")
            elif path.startswith("nvidia_pytriton.libs/"):
                relative = "lib/" + path.removeprefix("nvidia_pytriton.libs/")
            elif ".dist-info/licenses/" in path:
                relative = "licenses/nvidia-pytriton/" + path.rsplit("/", 1)[1]
            else:
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
            target.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)
    if not (dest / "backends/python/triton_python_backend_stub").exists():
        raise ComponentUnavailable(f"{wheel.name} has no Python backend stub for Python 3.11")


def _link(source: Path, dest: Path) -> None:
    """A hard link (the context costs no space), a copy across file systems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def prepare_context(name: str, log: Path) -> Path:
    """The build context of ``images/<name>/Containerfile`` (docker/podman build it too)."""
    context = work_dir() / "contexts" / name
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    if name in BASE_OF:
        house = _wheelhouse(name, log)
        for wheel in house.glob("*.whl"):
            if not wheel.name.startswith("nvidia_pytriton-"):
                _link(wheel, context / "wheels" / wheel.name)
        shutil.copy(house / "requirements.txt", context / "requirements.txt")
        if name == "tritonserver":
            [pytriton] = house.glob("nvidia_pytriton-*.whl")
            _triton_tree(pytriton, context / "tritonserver")
    if name in ("aios", "aios-edge"):
        wheel = _project_wheel(log)
        _link(wheel, context / "project" / wheel.name)
        pin = f"aios=={project_version()} --hash=sha256:{_file_digest(wheel)}\n"
        (context / "aios.txt").write_text(pin)
    if name == "aios":
        for path in policy_files():
            _link(path, context / "policies" / path.relative_to(REPO_ROOT / "policies"))
    if name == "coredns":
        _link(COREDNS.binary(), context / "coredns")
    if name == "pause":
        _run(
            [
                *("gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror"),
                *("-o", str(context / "pause"), str(SOURCES / "pause" / "pause.c")),
            ],
            log,
            "compiling pause",
        )
    return context


# -- build and export --------------------------------------------------------------------


def _note(message: str) -> None:
    print(f"aios images: {message}", file=sys.stderr, flush=True)


def _build(name: str, key: str) -> BuiltImage:
    started = time.monotonic()
    logs = work_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    log.write_text(f"building {reference(name)} (key {key})\n")
    _buildah(["rm", "--all"], log, "removing left-over build containers")
    args = ["bud", "--layers", "--timestamp", str(EPOCH), "--identity-label=false"]
    args += ["--pull=never", "--format=oci", "-f", str(SOURCES / name / "Containerfile")]
    if name in BASE_OF:
        args += ["--build-arg", f"BASE={_base(BASE_OF[name], log)}"]
    for label, value in labels(name, revision(source_paths(name))).items():
        args += ["--label", f"{label}={value}"]
    context = prepare_context(name, log)
    _buildah([*args, "-t", reference(name), str(context)], log, f"building {name}")
    layout = work_dir() / "tmp" / f"oci-{name}"
    shutil.rmtree(layout, ignore_errors=True)
    _buildah(["push", "--quiet", reference(name), f"oci:{layout}:{name}"], log, f"exporting {name}")
    archive = work_dir() / "archives" / f"{name}-{key}.tar"
    built = write_archive(name, layout, archive)
    _record(name, key).write_text(json.dumps({**asdict(built), "archive": str(archive)}, indent=1))
    shutil.rmtree(layout)
    shutil.rmtree(context)
    _note(
        f"{name} built in {time.monotonic() - started:.0f} s: {built.reference} {built.digest}, "
        f"{built.size / 1e6:.1f} MB ({built.unpacked_size / 1e6:.1f} MB unpacked)"
    )
    return built


def write_archive(name: str, layout: Path, archive: Path) -> BuiltImage:
    """An OCI archive of the one image in ``layout``, named for containerd: its index entry
    carries io.containerd.image.name (``ctr images import`` names the image by it; the OCI
    ref.name alone holds only the tag)."""
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]

    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")

    manifest = json.loads(blob(entry["digest"]).read_bytes())
    config = json.loads(blob(manifest["config"]["digest"]).read_bytes())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": entry["mediaType"],
                "digest": entry["digest"],
                "size": entry["size"],
                "annotations": {
                    "io.containerd.image.name": reference(name),
                    "org.opencontainers.image.ref.name": version(name),
                },
                "platform": {"architecture": config["architecture"], "os": config["os"]},
            }
        ],
    }
    blobs = [entry["digest"], manifest["config"]["digest"]]
    blobs += [layer["digest"] for layer in manifest["layers"]]
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".part")
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as out:
        files = {
            "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
            "index.json": json.dumps(index).encode(),
        }
        for path, data in files.items():
            out.addfile(_tar_entry(path, len(data)), io.BytesIO(data))
        for directory in ("blobs", "blobs/sha256"):
            out.addfile(_tar_entry(directory, 0, directory=True))
        for digest in sorted(set(blobs)):
            with blob(digest).open("rb") as content:
                entry_name = f"blobs/sha256/{blob(digest).name}"
                out.addfile(_tar_entry(entry_name, blob(digest).stat().st_size), content)
    partial.rename(archive)
    return BuiltImage(
        name=name,
        reference=reference(name),
        digest=entry["digest"],
        archive=archive,
        size=sum(d["size"] for d in (entry, manifest["config"], *manifest["layers"])),
        unpacked_size=sum(_gzip_size(blob(layer["digest"])) for layer in manifest["layers"]),
    )


def _tar_entry(path: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size, info.mtime, info.mode = size, EPOCH, 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


def _gzip_size(path: Path) -> int:
    """A gzip layer's uncompressed size, from its trailer (one member, under 4 GiB)."""
    with path.open("rb") as f:
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def _prune() -> None:
    """Keep the two newest archives of each image (a concurrent run may still import the
    older one), the most recent wheelhouses and project wheels, and in buildah's store the
    images still named and the layers they build on (its layer cache)."""
    log = work_dir() / "logs" / "prune.log"
    log.write_text("")
    _buildah(["rmi", "--prune"], log, "pruning buildah's store")
    records = sorted(
        (work_dir() / "archives").glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    kept: dict[str, int] = {}
    for record in records:
        name = json.loads(record.read_text())["name"]
        kept[name] = kept.get(name, 0) + 1
        if kept[name] > 2:
            record.with_suffix(".tar").unlink(missing_ok=True)
            record.unlink()
    for folder, keep in (("wheels", 6), ("project", 3), ("base", 4)):
        entries = sorted(
            (work_dir() / folder).glob("*"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for stale in entries[keep:]:
            shutil.rmtree(stale, ignore_errors=True)


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aios.stack.images",
        description="Build the aios images (what is missing) and say where they are.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"{', '.join(NAMES)} (all)")
    parser.add_argument(
        "--context",
        metavar="NAME",
        choices=NAMES,
        help="only prepare NAME's build context (for docker/podman build) and print its path",
    )
    args = parser.parse_args(argv)
    if unknown := set(args.names) - set(NAMES):
        parser.error(f"unknown image {', '.join(sorted(unknown))}: one of {', '.join(NAMES)}")
    try:
        if args.context:
            with _locked():
                logs = work_dir() / "logs"
                logs.mkdir(parents=True, exist_ok=True)
                print(prepare_context(args.context, logs / f"{args.context}-context.log"))
            return 0
        built = ensure_images(args.names or None)
    except ComponentUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    for image in built.values():
        print(f"{image.reference}\n  digest   {image.digest}")
        print(
            f"  size     {image.size / 1e6:.1f} MB compressed, "
            f"{image.unpacked_size / 1e6:.1f} MB unpacked"
        )
        print(f"  archive  {image.archive}")
    print(
        "\nImport into a node's containerd:\n"
        "  ctr -n k8s.io images import --all-platforms ARCHIVE\n"
        "Push to a registry (skopeo, from Debian):\n"
        + "".join(
            f"  skopeo copy oci-archive:{i.archive} docker://REGISTRY/{i.name}:{version(i.name)}\n"
            for i in built.values()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
