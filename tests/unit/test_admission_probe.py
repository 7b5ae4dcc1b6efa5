"""When a dry run says an admission webhook was reached: admitted or denied, not when the
API server could not call it, and never by swallowing another refusal."""

from __future__ import annotations

import pytest

from aios.stack.site.probes import admission_reached

PROBE = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}}


def answering(error: str | None):
    def kubectl(args: list[str], stdin: str | None = None) -> str:
        assert args[:2] == ["create", "--dry-run=server"] and '"probe"' in (stdin or "")
        if error is not None:
            raise RuntimeError(error)
        return "configmap/probe created (server dry run)"

    return kubectl


def test_an_admitted_or_denied_dry_run_reached_the_webhook() -> None:
    assert admission_reached(answering(None), PROBE)
    denied = 'admission webhook "v.kserve" denied the request: bad spec'
    assert admission_reached(answering(denied), PROBE)


def test_a_webhook_without_an_endpoint_is_not_reached_yet() -> None:
    unreached = 'Internal error: failed calling webhook "v.kserve": no endpoints available'
    assert not admission_reached(answering(unreached), PROBE)


def test_any_other_refusal_is_raised() -> None:
    with pytest.raises(RuntimeError, match="forbidden"):
        admission_reached(answering("configmaps is forbidden"), PROBE)
