"""KServe's storage initializer, run from the aios image.

``python -m aios.connectors.storage_initializer URI DIR [URI DIR ...]`` downloads each model
URI into its directory with KServe's own storage library (``kserve-storage``: S3, GCS,
Azure, HTTP(S), Hugging Face), as KServe's ``storage-initializer`` image does. A cluster
that cannot pull that image names this command in a ``ClusterStorageContainer`` (the local
site does: ``aios.stack.site.kserve``); the S3 endpoint and credentials come from the
environment KServe sets (``AWS_ENDPOINT_URL``, ``awsAnonymousCredential``, …).
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print("usage: storage_initializer URI DIR [URI DIR ...]", file=sys.stderr)
        return 2
    from kserve_storage import Storage

    logging.basicConfig(level=logging.INFO)
    Storage.download_files(argv[0::2], argv[1::2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
