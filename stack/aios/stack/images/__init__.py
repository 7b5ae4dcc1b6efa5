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

The parts: ``recipe`` (names, versions, labels, fixed settings), ``inputs`` (the
digests a build is keyed by), ``buildah`` (running the build), ``ingredients`` (what a
build context holds), ``archive`` (the OCI archive), ``build`` (build what is missing).

Everything lives under ``$AIOS_CACHE/images``; buildah runs in a private mount namespace
with its run root on a tmpfs there, so no mount outlives it; a file lock serialises builds
of concurrent processes.
"""

from aios.stack.images.archive import write_archive
from aios.stack.images.build import ensure_images
from aios.stack.images.recipe import NAMES, BuiltImage, reference, version

__all__ = ["NAMES", "BuiltImage", "ensure_images", "reference", "version", "write_archive"]
