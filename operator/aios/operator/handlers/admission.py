"""The validating admission webhook for aios kinds: every create or change is sent, with
the requesting user, to OPA before the API server stores it.

``deny`` rejects with the policies' messages, ``warn`` admits and kubectl prints the
warnings, ``dryrun`` only counts (metric and audit record). Only aios kinds are covered, so
an OPA outage can never block the rest of the cluster; what happens to aios objects while
OPA is down is ``AIOS_WEBHOOK_FAILURE_POLICY`` (``Fail``, the default, or ``Ignore``).

kopf serves the webhook and keeps the ``ValidatingWebhookConfiguration`` ``aios.dev`` in
line; the operator issues the TLS certificates and rotates them (``certificates``).

Settings (environment): ``AIOS_WEBHOOK_HOST`` (the API server calls
``https://<host>:<port>``, e.g. the local site) or ``AIOS_WEBHOOK_SERVICE``
(``namespace/name`` of the operator's Service, port ``AIOS_WEBHOOK_SERVICE_PORT``);
neither → no webhook. ``AIOS_WEBHOOK_ADDR`` / ``AIOS_WEBHOOK_PORT``: where to listen;
``AIOS_WEBHOOK_CERT_SECONDS``: serving certificate lifetime (renewed at two thirds);
``AIOS_WEBHOOK_CERT_CHECK_SECONDS``: how often to check; ``AIOS_WEBHOOK_CERT_DIR``;
``AIOS_WEBHOOK_CA_DIR``: a CA shared by every replica (``tls.crt``, ``tls.key``, e.g. the
Helm chart's Secret), so the Service may send a review to any of them. Behind a Service the
webhooks stay configured when one replica stops (the others serve them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aios.api import GROUP, VERSION, AutomationIntent, EdgeGateway, ModelDeployment, Resource
from aios.connectors import opa
from aios.connectors.audit import AuditUnavailable
from aios.operator.audit import record
from aios.operator.certificates import WebhookCertificates
from aios.operator.handlers.common import runtime
from aios.operator.handlers.policy import opa_url
from aios.operator.reconcile import policy as plan
from aios.operator.settings import WebhookSettings

CONFIGURATION_NAME = "aios.dev"


class OperatorWebhookServer(kopf.WebhookServer):
    """kopf's webhook server with the operator's certificates.

    A renewed serving certificate is loaded into the live TLS context (no restart, no
    refused connection); its files get new names, so kopf, which watches the files it
    started with, sees no change. A renewed CA rewrites the bundle file, which kopf
    notices: it restarts the server with the current files and patches the new
    ``caBundle`` into the configuration. Old files are deleted only at such a restart."""

    def __init__(self, settings: WebhookSettings, certificates: WebhookCertificates) -> None:
        self.settings = settings
        self.certificates = certificates
        super().__init__(
            addr=settings.addr,
            port=settings.port,
            host=settings.host,
            context=ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH),
            certfile=certificates.cert_path,
            pkeyfile=certificates.key_path,
            cafile=certificates.bundle_path,
            file_check_interval=settings.check_seconds,
        )

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            # (Re)started with the current files: older ones are watched by nobody now.
            self.certificates.prune()
            if self.settings.service is not None:
                namespace, name = self.settings.service
                client_config = {
                    "caBundle": client_config.get("caBundle"),
                    "service": {
                        "namespace": namespace,
                        "name": name,
                        "port": self.settings.service_port,
                    },
                }
            yield client_config

    def rotate(self, now: datetime.datetime) -> None:
        rotation = self.certificates.ensure(now)
        if rotation.serving:
            self.certfile = self.certificates.cert_path
            self.pkeyfile = self.certificates.key_path
            if self.context is not None:
                self.context.load_cert_chain(self.certfile, self.pkeyfile)


async def _rotate_forever(server: OperatorWebhookServer, logger: kopf.Logger) -> None:
    while True:
        await asyncio.sleep(server.settings.check_seconds)
        try:
            server.rotate(datetime.datetime.now(datetime.UTC))
        except Exception:
            logger.exception("webhook certificate rotation failed; retrying")


@kopf.on.startup()
async def configure_webhook(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    webhook = runtime(memo).webhook
    if not webhook.enabled:
        logger.info("admission webhook off: set AIOS_WEBHOOK_HOST or AIOS_WEBHOOK_SERVICE")
        return
    directory = webhook.cert_dir or Path(tempfile.mkdtemp(prefix="aios-webhook-"))
    certificates = WebhookCertificates(
        directory, webhook.hosts(), webhook.cert_seconds, ca=webhook.shared_ca()
    )
    certificates.ensure(datetime.datetime.now(datetime.UTC))
    await configurations_exist(runtime(memo).api, logger)
    server = OperatorWebhookServer(webhook, certificates)
    settings.admission.server = server
    settings.admission.managed = CONFIGURATION_NAME
    memo.webhook_rotation = asyncio.create_task(_rotate_forever(server, logger))


async def configurations_exist(
    api: client.ApiClient, logger: kopf.Logger, interval: float = 0.5
) -> None:
    """Wait until the chart's webhook configurations exist, before kopf manages them.

    Helm creates webhook configurations after Deployments; kopf creates its own when they
    are missing. A replica that started first would create them, and Helm's install would
    then fail on "already exists". So the chart creates them and the operator only fills
    them in."""
    admission = client.AdmissionregistrationV1Api(api)
    reads = (
        admission.read_validating_webhook_configuration,
        admission.read_mutating_webhook_configuration,
    )
    told = False
    while True:
        try:
            for read in reads:
                await asyncio.to_thread(read, CONFIGURATION_NAME)
            return
        except ApiException as error:
            if error.status != 404:
                raise
        if not told:
            logger.info(
                f"waiting for the webhook configurations {CONFIGURATION_NAME} (the chart's)"
            )
            told = True
        await asyncio.sleep(interval)


@kopf.on.cleanup()
async def stop_rotation(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("webhook_rotation")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def admit(
    settings: WebhookSettings,
    opa_address: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    operation: str,
    userinfo: Mapping[str, Any],
    warnings: list[str],
    dryrun: bool,
) -> None:
    """Ask OPA; reject (deny), warn (warn), count (dryrun); audit unless a dry-run request."""
    if not plan.needs_review(operation, body, old):
        return
    document = plan.review(body, operation, old, userinfo)
    metadata = body.get("metadata") or {}
    name = metadata.get("name") or metadata.get("generateName")
    subject = f"{body.get('kind')} {metadata.get('namespace')}/{name}"
    actor = userinfo.get("username")
    details: dict[str, Any] = {"operation": operation, "dryRunRequest": dryrun}
    try:
        decision = await opa.evaluate(opa_address, document)
    except opa.PolicyUnavailable as error:
        failure_policy = settings.failure_policy
        details.update(outcome="unavailable", failurePolicy=failure_policy, error=str(error))
        await _audit(subject, details, actor, None, dryrun, failure_policy)
        if failure_policy == "Ignore":
            warnings.append(f"aios policies were not evaluated: {error}")
            return
        raise kopf.AdmissionError(
            f"aios policies could not be evaluated: {error}", code=503
        ) from error
    details.update(
        outcome="allowed" if decision.allowed else "denied",
        denials=decision.reasons,
        warnings=decision.warnings,
        dryrun=decision.dryrun,
        policies=decision.policies,
    )
    await _audit(subject, details, actor, decision.decision_id, dryrun, settings.failure_policy)
    warnings.extend(decision.warnings)
    if not decision.allowed:
        raise kopf.AdmissionError("; ".join(decision.reasons), code=403)


async def _audit(
    subject: str,
    details: dict[str, Any],
    actor: str | None,
    decision_id: str | None,
    dryrun: bool,
    failure_policy: str,
) -> None:
    """A dry-run request must have no side effects (sideEffects: NoneOnDryRun)."""
    if dryrun:
        return
    try:
        await record("admission", subject, details, actor=actor, policy_decision_id=decision_id)
    except AuditUnavailable as error:
        if failure_policy == "Fail":
            raise kopf.AdmissionError(
                f"the admission decision could not be audited: {error}", code=503
            ) from error


def _register(model: type[Resource[Any, Any]], settings: WebhookSettings) -> None:
    @kopf.on.validate(
        GROUP,
        VERSION,
        model.crd.plural,
        id=f"policy-{model.crd.singular}",
        operations=["CREATE", "UPDATE"],
        side_effects=True,
        ignore_failures=settings.failure_policy == "Ignore",
        persistent=settings.service is not None,
    )
    async def validate(
        *,
        body: kopf.Body,
        userinfo: kopf.UserInfo,
        warnings: list[str],
        dryrun: bool,
        memo: kopf.Memo,
        **kwargs: Any,
    ) -> None:
        old, operation = kwargs.get("old"), kwargs["operation"]
        url = opa_url(memo)
        await admit(settings, url, body, old, operation, userinfo, warnings, dryrun)


def register(settings: WebhookSettings) -> None:
    """Validate the kinds users write, when the webhook is configured (at start-up: how kopf
    treats failures depends on the settings)."""
    if settings.enabled:
        for model in (ModelDeployment, AutomationIntent, EdgeGateway):
            _register(model, settings)
