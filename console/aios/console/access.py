"""Who the user is and what they may do, as the cluster says: TokenReview at sign-in,
SubjectAccessReview for each thing shown or offered (cached briefly per user), and an API
client that carries the user's own token for what they create."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kubernetes import client

from aios.api import GROUP

REVIEW_TTL_SECONDS = 30.0


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Ask:
    """One question for SubjectAccessReview: may the user ``verb`` ``resource`` in
    ``namespace`` (of aios's API group)?"""

    verb: str
    resource: str
    namespace: str


class Access:
    """The console's own client asks the API server on the user's behalf."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self._answers: dict[tuple[Identity, Ask], tuple[bool, float]] = {}

    def review(self, token: str) -> Identity | None:
        """Who ``token`` belongs to, or None when the cluster does not accept it."""
        review = client.AuthenticationV1Api(self.api_client).create_token_review(
            client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        )
        status = review.status
        if status is None or not status.authenticated or not (status.user and status.user.username):
            return None
        return Identity(status.user.username, tuple(status.user.groups or ()))

    def allowed(self, who: Identity, ask: Ask) -> bool:
        key = (who, ask)
        cached = self._answers.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        review = client.AuthorizationV1Api(self.api_client).create_subject_access_review(
            client.V1SubjectAccessReview(
                spec=client.V1SubjectAccessReviewSpec(
                    user=who.user,
                    groups=list(who.groups),
                    resource_attributes=client.V1ResourceAttributes(
                        group=GROUP,
                        resource=ask.resource,
                        verb=ask.verb,
                        namespace=ask.namespace,
                    ),
                )
            )
        )
        answer = bool(review.status and review.status.allowed)
        if len(self._answers) > 10_000:
            self._answers.clear()
        self._answers[key] = (answer, time.monotonic() + REVIEW_TTL_SECONDS)
        return answer

    def as_user(self, token: str) -> client.ApiClient:
        """A client of the same API server that authenticates as the token's owner."""
        own = self.api_client.configuration
        configuration = client.Configuration(host=own.host)
        configuration.ssl_ca_cert = own.ssl_ca_cert
        configuration.verify_ssl = own.verify_ssl
        configuration.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(configuration)
