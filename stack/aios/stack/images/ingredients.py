"""What a build context holds: the Debian base image, the pinned wheels, aios's own
wheel, Triton's tree, the pause binary; ``prepare_context`` lays them out."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from aios.stack.components import HACK, REPO_ROOT, ComponentUnavailable
from aios.stack.images.buildah import buildah, run_step
from aios.stack.images.inputs import (
    apt_sources,
    base_key,
    constraints,
    digest_files,
    file_digest,
    policy_files,
    project_files,
    requirements,
    wheelhouse_key,
)
from aios.stack.images.recipe import (
    BASE_DROPPED,
    BASE_OF,
    COREDNS,
    EPOCH,
    MMDEBSTRAP_OPTIONS,
    PIP,
    PROJECT_ROOTS,
    SOURCES,
    SUITE,
    WHEEL_EPOCH,
    WHEEL_TARGET,
    note,
    project_version,
    work_dir,
)


def base_image(base: str, log: Path) -> str:
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
        run_step(
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
        strip_rootfs(raw, folder / "rootfs.part")
        raw.unlink()
        (folder / "rootfs.part").rename(rootfs)
        note(f"base {base}: root file system made in {time.monotonic() - started:.0f} s")
    shutil.copy(SOURCES / "base" / "Containerfile", folder / "Containerfile")
    ref = f"localhost/aios-base-{base}:{key}"
    buildah(
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


def strip_rootfs(source: Path, dest: Path) -> None:
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
    run_step([*pip, *with_deps], log, f"pip download for {name}")
    locked = sorted(partial.glob("*.whl"))
    run_step([*pip, "--no-deps", *alone], log, f"pip download for {name}")
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
            lines.append(f"{dist}=={found} --hash=sha256:{file_digest(wheel)}")
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
    run_step(
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
        pin = f"aios=={project_version()} --hash=sha256:{file_digest(wheel)}\n"
        (context / "aios.txt").write_text(pin)
    if name == "aios":
        for path in policy_files():
            _link(path, context / "policies" / path.relative_to(REPO_ROOT / "policies"))
    if name == "coredns":
        _link(COREDNS.binary(), context / "coredns")
    if name == "pause":
        run_step(
            [
                *("gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror"),
                *("-o", str(context / "pause"), str(SOURCES / "pause" / "pause.c")),
            ],
            log,
            "compiling pause",
        )
    return context
