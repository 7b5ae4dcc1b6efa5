"""Building the images that are missing, once per key of their inputs, one build at a time
across processes; and pruning what the cache no longer needs."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path

from aios.stack.components import exclusive
from aios.stack.images.archive import write_archive
from aios.stack.images.buildah import buildah, install_tools, missing_tools
from aios.stack.images.ingredients import base_image, prepare_context
from aios.stack.images.inputs import image_inputs, input_key, revision, source_paths
from aios.stack.images.recipe import (
    BASE_OF,
    EPOCH,
    NAMES,
    SOURCES,
    BuiltImage,
    labels,
    note,
    reference,
    version,
    work_dir,
)


def _record(name: str, key: str) -> Path:
    return work_dir() / "archives" / f"{name}-{key}.json"


def _cached(name: str, key: str) -> BuiltImage | None:
    try:
        data = json.loads(_record(name, key).read_text())
    except (OSError, ValueError):
        return None
    built = BuiltImage(**{**data, "archive": Path(data["archive"])})
    return built if built.archive.exists() else None


def locked() -> AbstractContextManager[None]:
    """One build at a time across processes (a test run beside ``make run``)."""
    return exclusive(work_dir() / "lock")


def ensure_images(names: Collection[str] | None = None) -> dict[str, BuiltImage]:
    """The requested images (all by default), built first if the cache lacks them."""
    wanted = list(NAMES if names is None else names)
    for name in wanted:
        version(name)  # rejects an unknown name
    if missing_tools():
        with locked():
            install_tools()
    found = {name: _cached(name, input_key(image_inputs(name))) for name in wanted}
    if all(found.values()):
        return {name: built for name, built in found.items() if built}
    with locked():
        for name in wanted:
            key = input_key(image_inputs(name))
            found[name] = _cached(name, key) or _build(name, key)
        _prune()
    return {name: built for name, built in found.items() if built}


def _build(name: str, key: str) -> BuiltImage:
    started = time.monotonic()
    logs = work_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    log.write_text(f"building {reference(name)} (key {key})\n")
    buildah(["rm", "--all"], log, "removing left-over build containers")
    args = ["bud", "--layers", "--timestamp", str(EPOCH), "--identity-label=false"]
    args += ["--pull=never", "--format=oci", "-f", str(SOURCES / name / "Containerfile")]
    if name in BASE_OF:
        args += ["--build-arg", f"BASE={base_image(BASE_OF[name], log)}"]
    for label, value in labels(name, revision(source_paths(name))).items():
        args += ["--label", f"{label}={value}"]
    context = prepare_context(name, log)
    buildah([*args, "-t", reference(name), str(context)], log, f"building {name}")
    layout = work_dir() / "tmp" / f"oci-{name}"
    shutil.rmtree(layout, ignore_errors=True)
    buildah(["push", "--quiet", reference(name), f"oci:{layout}:{name}"], log, f"exporting {name}")
    archive = work_dir() / "archives" / f"{name}-{key}.tar"
    built = write_archive(name, layout, archive)
    _record(name, key).write_text(json.dumps({**asdict(built), "archive": str(archive)}, indent=1))
    shutil.rmtree(layout)
    shutil.rmtree(context)
    note(
        f"{name} built in {time.monotonic() - started:.0f} s: {built.reference} {built.digest}, "
        f"{built.size / 1e6:.1f} MB ({built.unpacked_size / 1e6:.1f} MB unpacked)"
    )
    return built


def _prune() -> None:
    """Keep the two newest archives of each image (a concurrent run may still import the
    older one), the most recent wheelhouses and project wheels, and in buildah's store the
    images still named and the layers they build on (its layer cache)."""
    log = work_dir() / "logs" / "prune.log"
    log.write_text("")
    buildah(["rmi", "--prune"], log, "pruning buildah's store")
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
