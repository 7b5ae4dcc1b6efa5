"""The local site: a real single-node cluster and the servers aios uses, in one directory.

The parts: ``lifecycle`` (``Site``: start, stop, restart, kubectl), ``services`` (Kafka,
Temporal, OPA, Triton, Mosquitto, one start function each; Kubernetes is
``aios.stack.cluster``), ``keda`` (KEDA's operator and metrics adapter, once the cluster
is up), ``kserve`` (the KServe controller, when asked for), ``state`` (``site.json``:
endpoints and processes), ``probes`` (health checks) and ``supervisor`` (a site run by
another process: wait for it, stop it).
"""

from aios.stack.site.lifecycle import OPTIONAL_ADDONS, Site, kubectl_argv
from aios.stack.site.probes import http_ok, mqtt_ready
from aios.stack.site.state import Endpoints, SiteState, default_site_dir
from aios.stack.site.supervisor import stop_running_site, wait_for_site

__all__ = [
    "OPTIONAL_ADDONS",
    "Endpoints",
    "Site",
    "SiteState",
    "default_site_dir",
    "http_ok",
    "kubectl_argv",
    "mqtt_ready",
    "stop_running_site",
    "wait_for_site",
]
