#!/bin/sh
# mmdebstrap --extract-hook for the Python base of the aios images ($1: the root file system).
# The packages were extracted, not installed (no dpkg, no maintainer scripts, no shell
# utilities in the image), so what their scripts would have made is made here.
set -eu
root=$1
# ca-certificates' postinst: the bundle OpenSSL, librdkafka and Python's ssl read.
cat "$root"/usr/share/ca-certificates/mozilla/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
# The one non-root user every image runs as (uid/gid 65532, as distroless's "nonroot").
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin\n' \
  > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
mkdir -p "$root/home/nonroot" && chown 65532:65532 "$root/home/nonroot"
# The standard library's byte code, compiled once: the non-root user cannot write it at
# run time. Hash-checked and with a fixed hash seed, so it does not depend on when or
# where it was built.
PYTHONHASHSEED=0 chroot "$root" /usr/bin/python3 -m compileall -q \
  --invalidation-mode unchecked-hash /usr/lib/python3.11 /usr/lib/python3/dist-packages
