"""The site's part of a Prometheus Operator: the site serves the operator's ServiceMonitor,
PodMonitor and PrometheusRule kinds, and its Prometheus scrapes and evaluates whatever
objects of those kinds are in the site, whoever applied them (the release ``aiosctl up``
installs, or a user's own ``helm install`` with the values ``aiosctl env --helm-values``
prints).

Like the Prometheus Operator, it selects every monitor in every namespace, skips (and
logs) one it cannot translate, and regenerates Prometheus's configuration when the
objects change; it lists them every scrape interval, so an API server restart costs it
nothing but a logged miss.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client, config

from aios.stack import components, monitors

if TYPE_CHECKING:
    from aios.stack.site import Site

GROUP, VERSION = "monitoring.coreos.com", "v1"
PLURALS = {
    monitors.SERVICE_MONITOR: "servicemonitors",
    monitors.POD_MONITOR: "podmonitors",
    monitors.PROMETHEUS_RULE: "prometheusrules",
}
SCRAPE_FILE = "scrape/monitors.yaml"


def prometheus_files(
    objects: Iterable[Mapping[str, Any]], kubeconfig: str
) -> tuple[dict[str, str], list[str]]:
    """Prometheus's configuration for ``objects`` by path under its home, and why any
    object was left out: every monitor's scrape jobs in one file, and one rule file per
    PrometheusRule (its group names need be unique only within it, as in a cluster)."""
    jobs: list[dict[str, Any]] = []
    files: dict[str, str] = {}
    refused: list[str] = []
    for item in sorted(objects, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        meta = item["metadata"]
        try:
            if item["kind"] == monitors.PROMETHEUS_RULE:
                groups = monitors.rule_groups([item])
                path = f"rules/{meta['namespace']}_{meta['name']}.yaml"
                files[path] = yaml.safe_dump({"groups": groups}, sort_keys=False)
            else:
                jobs += monitors.scrape_configs([item], kubeconfig)
        except (ValueError, KeyError) as error:
            refused.append(f"{item['kind']} {meta['namespace']}/{meta['name']}: {error}")
    files[SCRAPE_FILE] = yaml.safe_dump({"scrape_configs": jobs}, sort_keys=False)
    return files, refused


def written_files(home: Path) -> dict[str, str]:
    """The configuration files a sync wrote under Prometheus's ``home``."""
    return {
        str(path.relative_to(home)): path.read_text()
        for folder in ("scrape", "rules")
        for path in sorted((home / folder).glob("*.yaml"))
    }


class MonitorSync:
    """Keeps ``site``'s Prometheus configured from the site's monitoring objects."""

    def __init__(self, site: Site, interval: float) -> None:
        self.site = site
        self.interval = interval
        self.home = site.directory / "prometheus"
        self.log = site.logs / "monitor-sync.log"
        self._refused: list[str] = []
        self._loaded: dict[str, str] | None = None
        """What Prometheus last loaded (or refused): a failed reload is retried next pass."""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-sync", daemon=True)
        api_client = config.new_client_from_config(config_file=site.endpoints.kubeconfig)
        self.api = client.CustomObjectsApi(api_client)
        self._logger = logging.getLogger(f"{__name__}.{site.directory}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = logging.FileHandler(self.log)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._logger.addHandler(self._handler)

    def start(self) -> None:
        """Serve the Prometheus Operator's kinds in the site, then follow their objects."""
        crds = components.PROMETHEUS_OPERATOR_CRDS.ensure() / "crds"
        self.site.kubectl(["apply", "--server-side", "--force-conflicts", "-f", str(crds)])
        self.site.wait_established(f"{plural}.{GROUP}" for plural in PLURALS.values())
        self.sync()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._logger.removeHandler(self._handler)
        self._handler.close()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.sync()
            except Exception as error:  # the next pass retries; the log says why
                self._logger.warning("%s", error)

    def unscraped(self) -> list[str]:
        """The scrape pools Prometheus has not scraped yet: configured, with no target up,
        or with a target it has found but never scraped (health ``unknown``)."""
        pools = self._prometheus("scrape_pools")["scrapePools"]
        targets = self._prometheus("targets?state=active")["activeTargets"]
        up = {t["scrapePool"] for t in targets if t["health"] == "up"}
        unknown = {t["scrapePool"] for t in targets if t["health"] == "unknown"}
        return sorted((set(pools) - up) | unknown)

    def wait_scraped(self, timeout: float) -> list[str]:
        """Wait (up to ``timeout``) until every scrape pool has been scraped, so a query
        made once the city is Ready finds each of its jobs (targets are found in batches
        every 5 s and scraped within an interval); the pools still waiting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                waiting = self.unscraped()
            except OSError as error:  # Prometheus reloading or restarting: asked again
                waiting = [f"(Prometheus did not answer: {error})"]
            if not waiting or time.monotonic() >= deadline or self._stopped.wait(1):
                return waiting

    def _prometheus(self, path: str) -> Any:
        url = f"{self.site.endpoints.prometheus_url}/api/v1/{path}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)["data"]

    def objects(self) -> list[dict[str, Any]]:
        """Every monitoring object in the site (a list names no kind on its items)."""
        found: list[dict[str, Any]] = []
        for kind, plural in PLURALS.items():
            listed: Any = self.api.list_cluster_custom_object(
                GROUP, VERSION, plural, _request_timeout=30
            )
            found += [{**item, "kind": kind} for item in listed["items"]]
        return found

    def sync(self) -> None:
        """Translate what the site holds; rewrite and reload only when that changed."""
        files, refused = prometheus_files(self.objects(), self.site.endpoints.kubeconfig)
        if refused != self._refused:
            for reason in refused:
                self._logger.warning("left out %s", reason)
            self._refused = refused
        if files == self._loaded:
            return
        current = written_files(self.home)
        for path in current.keys() - files.keys():
            (self.home / path).unlink()
        for path, text in files.items():
            if current.get(path) != text:
                (self.home / path).write_text(text)
        self._reload()
        self._loaded = files

    def _reload(self) -> None:
        """Have Prometheus load its configuration files again; one it refuses is logged
        with its reason (a fault no retry mends)."""
        url = f"{self.site.endpoints.prometheus_url}/-/reload"
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30).close()
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            self._logger.error("Prometheus refused the monitors' configuration: %s", body)
            return
        self._logger.info("Prometheus reloaded")
