"""``python -m aios.stack.images [NAME...]``: build what is missing and say where it is."""

from __future__ import annotations

import argparse
import sys

from aios.stack.components import ComponentUnavailable
from aios.stack.images.build import ensure_images, locked
from aios.stack.images.ingredients import prepare_context
from aios.stack.images.recipe import NAMES, version, work_dir


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
            with locked():
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
