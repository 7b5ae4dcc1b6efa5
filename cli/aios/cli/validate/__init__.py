"""``aiosctl validate PATH...``: check manifests offline, for a GitOps repository's CI.

Every kustomization found is built (``kubectl kustomize``, offline) and every other YAML
file read as it is. Each aios object is validated against its model in ``aios.api`` (the
same schema and rules the API server enforces), and every object is reviewed by the
Policies of its build, loaded with the Rego library (``policies/``) into ``opa eval``
exactly as the operator loads them into OPA: what admission would deny is an error, what
it would warn about a warning. Problems are printed ``file:line: severity: message`` (or as
GitHub annotations, or JSON/YAML); the exit code is 1 when there is an error.
"""

from __future__ import annotations

from aios.cli.validate.command import validate

__all__ = ["validate"]
