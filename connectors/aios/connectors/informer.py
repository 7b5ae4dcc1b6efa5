"""List, then watch, one kind: a cache's feed, as client-go's informers do it.

A thread lists the kind in pages, hands each object on, then watches from the list's
resourceVersion (with bookmarks, so a quiet kind's version stays fresh) and hands on each
event. A watch the API server ends is resumed from the last version seen; one whose
version has expired (410 Gone) is followed by a new list, after which every object not
listed is reported gone. Errors (the API server restarting) are retried with backoff.

The events are parsed once, as plain dicts: no model classes, no re-serialising.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

LIST_PAGE = 500
WATCH_SECONDS = 300
"""Each watch request's length (the API server ends it; it is resumed at once)."""
FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 5.0
"""The longest wait between attempts while the API server is away: a restarted API server
is followed within seconds (a list costs it little next to what a stale cache costs)."""
GONE = 410
LOG = logging.getLogger(__name__)

Event = Callable[[str | None, dict[str, Any]], None]
"""``(type, object)``: ``None`` for an object listed, else the watch's ADDED, MODIFIED or
DELETED."""
Relisted = Callable[[str | None, set[str]], None]
"""``(namespace, uids)`` after a list: every object of that namespace (``None``: of every
namespace) not among ``uids`` is gone."""


class Expired(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer:
    """Feeds ``on_event`` and ``on_relisted`` from its own thread (see the module
    docstring). The kind is any the API server serves: a custom kind, a built-in one of a
    named group (``apps``), or of the core group (``group=""``: a Service, under
    ``/api/v1``). ``namespace``: one namespace, or ``None`` for the whole
    cluster, where ``accept(namespace)`` picks the objects handed on; ``label_selector``
    and ``field_selector`` have the API server send only the objects they match."""

    def __init__(
        self,
        api: client.ApiClient,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        on_event: Event,
        on_relisted: Relisted,
        accept: Callable[[str], bool] | None = None,
        watch_seconds: int = WATCH_SECONDS,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self._api = api
        self._plural = plural
        root = f"/apis/{group}/{version}" if group else f"/api/{version}"
        scope = f"/namespaces/{namespace}" if namespace else ""
        self._path = f"{root}{scope}/{plural}"
        self.namespace = namespace
        self._on_event = on_event
        self._on_relisted = on_relisted
        self._accept = accept
        self._watch_seconds = watch_seconds
        selectors = (("labelSelector", label_selector), ("fieldSelector", field_selector))
        self._selector = [(key, value) for key, value in selectors if value]
        self.synced = threading.Event()
        """Set once the first list has been handed on."""
        self.watches = 0
        """Watch requests made so far (each resumes where the last one ended)."""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None
        where = namespace or "cluster"
        self._thread = threading.Thread(
            target=self._run, name=f"informer {plural} {where}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop handing on events; a watch in flight is shut under the thread (its socket:
        a close alone leaves the thread blocked in a read until the next event)."""
        with self._lock:
            self._stop.set()
            response = self._response
        if response is not None:
            response.shutdown()
        self._thread.join(timeout)

    def _run(self) -> None:
        version: str | None = None
        delay = FIRST_RETRY_SECONDS
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    self.synced.set()
                version = self._watch(version)
                delay = FIRST_RETRY_SECONDS
            except Expired:
                version = None
            except client.ApiException as error:
                if error.status == GONE:  # the watch's or the list's continue token
                    version = None
                    continue
                delay = self._retry(error, delay)
            except Exception as error:  # the API server away or restarting: again soon
                delay = self._retry(error, delay)

    def _retry(self, error: Exception, delay: float) -> float:
        """Wait ``delay`` (less when stopped); the next delay."""
        if not self._stop.is_set():
            LOG.warning("watching %s failed, retrying in %.1fs: %s", self._where, delay, error)
            self._stop.wait(delay)
        return min(delay * 2, LAST_RETRY_SECONDS)

    @property
    def _where(self) -> str:
        return f"{self._plural} in {self.namespace}" if self.namespace else self._plural

    def _call(self, query: list[tuple[str, Any]]) -> Any:
        """The kind's list (or watch) at ``self._path`` with ``query``: the API server's
        response, unread (what the generated clients do, for any group, the core one too:
        their custom-object calls know ``/apis`` only)."""
        request = self._api.param_serialize(
            "GET",
            self._path,
            query_params=query + self._selector,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*request)
        if not 200 <= response.status <= 299:
            response.read()
            raise client.ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    def _accepted(self, obj: dict[str, Any]) -> bool:
        return self._accept is None or self._accept(obj["metadata"].get("namespace") or "")

    def _list(self) -> str:
        """Hand on every object; the version to watch from."""
        listed: set[str] = set()
        token: str | None = None
        while True:
            paging = [("continue", token)] if token else []
            page = json.loads(self._call([("limit", LIST_PAGE), *paging]).data)
            for obj in page["items"]:
                # A built-in kind's list leaves them out of its items (a watch event's
                # object has them); every object handed on says what it is.
                obj.setdefault("apiVersion", page["apiVersion"])
                obj.setdefault("kind", page["kind"].removesuffix("List"))
                if self._accepted(obj):
                    listed.add(obj["metadata"]["uid"])
                    self._on_event(None, obj)
            token = page["metadata"].get("continue")
            if not token:
                self._on_relisted(self.namespace, listed)
                return str(page["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        """Hand on events until the API server ends the watch; the last version seen."""
        self.watches += 1
        response = self._call(
            [
                ("watch", True),
                ("resourceVersion", version),
                ("allowWatchBookmarks", True),
                ("timeoutSeconds", self._watch_seconds),
            ]
        )
        with self._lock:  # a stop from now on shuts it
            if self._stop.is_set():
                response.close()
                return version
            self._response = response
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == GONE:
                        raise Expired(obj.get("message"))
                    raise RuntimeError(f"{obj.get('reason')}: {obj.get('message')}")
                version = obj["metadata"]["resourceVersion"]
                if kind != "BOOKMARK" and self._accepted(obj):
                    self._on_event(kind, obj)
        finally:
            with self._lock:
                self._response = None
            response.close()
            response.release_conn()
        return version
