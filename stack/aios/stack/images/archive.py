"""The OCI archive a built image is handed over as (``ctr images import`` takes it)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from aios.stack.images.recipe import EPOCH, BuiltImage, reference, version


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
