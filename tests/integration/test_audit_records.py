"""Edge configuration changes reach the audit trail (promotions and rollbacks: see the
rollout tests; actions: the action workflow tests)."""

from __future__ import annotations

import time

import yaml

from aios.connectors.audit import read_log
from aios.stack.platform import EXAMPLES


def test_each_published_edge_config_generation_is_audited(kubectl, operator, namespace, site):
    gateway = yaml.safe_load((EXAMPLES / "district-7.yaml").read_text())
    gateway["metadata"]["annotations"] = {}  # no simulated agent needed here
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(gateway))
    gateway["spec"]["site"] = "district-7-b"
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(gateway))
    subject = f"edgegateway/{namespace}/district-7"
    deadline, records = time.monotonic() + 60, []
    while time.monotonic() < deadline and len({r.details["configGeneration"] for r in records}) < 2:
        records = [
            r
            for r in read_log(site.endpoints.kafka_bootstrap)
            if r.kind == "edge-config" and r.subject == subject
        ]
        time.sleep(1)
    assert sorted({r.details["configGeneration"] for r in records}) == [1, 2]
    assert all(r.details["filterChain"].startswith("sha256:") for r in records)
