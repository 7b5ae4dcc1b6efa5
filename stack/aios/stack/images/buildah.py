"""Running the build: the Debian tools it needs, each step with its log, and buildah in a
private mount namespace so no mount or state outlives it."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from aios.stack.components import ComponentUnavailable
from aios.stack.images.inputs import tool_versions
from aios.stack.images.recipe import TOOLS, work_dir


def missing_tools() -> list[str]:
    return [
        package
        for package, probe in TOOLS.items()
        if not (Path(probe).exists() if probe.startswith("/") else shutil.which(probe))
    ]


def install_tools() -> None:
    """Install the missing build tools from Debian (as ``hack/obtain.sh`` does mosquitto)."""
    missing = missing_tools()
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # ``make`` builds components beside the images: wait for an install they have begun.
    install = [*sudo, "apt-get", "install", "-o", "DPkg::Lock::Timeout=600", "-y", "-q", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ComponentUnavailable(
                f"could not install {' '.join(missing)} with apt-get:\n{result.stderr[-2000:]}"
            )
    tool_versions.cache_clear()


def run_step(
    command: Sequence[str], log: Path, what: str, env: dict[str, str] | None = None
) -> None:
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


def buildah(args: Sequence[str], log: Path, what: str) -> None:
    run_step([*_private(_storage_driver()), *args], log, what, env=_buildah_env())
