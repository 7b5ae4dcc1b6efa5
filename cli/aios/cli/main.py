"""aiosctl: daily operations for aios, and the local site (``up``, ``down``, ``env``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import typer
import yaml
from kubernetes import config
from rich.console import Console

from aios.cli import approvals, audit, explain, manual_actions, replay, status, validate
from aios.cli.output import Format, Output, emit
from aios.stack import release
from aios.stack.cluster import LOCAL_PEOPLE
from aios.stack.components import HELM
from aios.stack.images import ensure_images
from aios.stack.models import wait_serving
from aios.stack.platform import apply_examples, site_environment, wait_accepted
from aios.stack.site import (
    OPTIONAL_ADDONS,
    Site,
    SiteState,
    default_site_dir,
    stop_running_site,
    wait_for_site,
)

app = typer.Typer(
    help="aios: declare automation, run it governed and observable.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)  # a path in an error stays whole in a log
app.add_typer(audit.app, name="audit")
app.add_typer(approvals.app)  # aiosctl approve|reject KIND/NAME
app.add_typer(manual_actions.app)  # aiosctl act intent/NAME ACTION, revert action/ID
app.command()(validate.validate)  # aiosctl validate PATH...
app.command()(status.status)  # aiosctl status
app.command()(explain.explain)  # aiosctl explain KIND/NAME
app.command()(replay.replay)  # aiosctl replay intent/NAME --since 2h --rules FILE

SiteDir = typer.Option(
    None,
    "--site-dir",
    help="Where the local site keeps its state "
    "(default: $AIOS_SITE_DIR or ~/.local/state/aios/site).",
)

Extras = typer.Option(
    [],
    "--with",
    help="An optional add-on to run as well: kserve (ModelDeployments then become "
    "InferenceServices on KServe's controller).",
)


@app.command()
def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Return once the site is ready."),
    examples: bool = typer.Option(True, help="Apply examples/city-air-quality when ready."),
    site_dir: Path | None = SiteDir,
    timeout: float = typer.Option(900, help="Seconds to wait for the site (--detach)."),
    operator: bool = typer.Option(
        True, help="Run the operator; --no-operator leaves it (and the examples) to `helm install`."
    ),
    extras: list[str] = Extras,
    output: Output = Format,
) -> None:
    """Bring up the local site: Kubernetes, Kafka, Temporal, OPA, Triton, Mosquitto, the
    operator; then apply the examples. Runs until Ctrl-C unless --detach."""
    unknown = set(extras) - OPTIONAL_ADDONS
    if unknown:
        console.print(
            f"[red]--with {', '.join(sorted(unknown))}[/]: not an optional add-on "
            f"(one of: {', '.join(sorted(OPTIONAL_ADDONS))})"
        )
        raise typer.Exit(2)
    directory = (site_dir or default_site_dir()).resolve()
    if _running(directory):
        console.print(f"[yellow]a site already runs in {directory}[/]; `aiosctl down` first")
        raise typer.Exit(1)
    if detach:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "site.json").unlink(missing_ok=True)
        log = (directory / "supervisor.log").open("ab")
        argv = [sys.executable, "-m", "aios.cli.main", "up", "--site-dir", str(directory)]
        if not examples:
            argv.append("--no-examples")
        if not operator:
            argv.append("--no-operator")
        for extra in extras:
            argv += ["--with", extra]
        subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        with console.status("starting the local site (the first run builds components)…"):
            try:
                wait_for_site(directory, timeout)
            except (TimeoutError, RuntimeError) as error:
                console.print(f"[red]{error}[/]; see {directory / 'supervisor.log'}")
                raise typer.Exit(1) from error
        state = SiteState.load(directory)
        _print_ready(state)
        if not operator:
            _print_chart_hint()
        _print_console(_attached(state))
        emit(asdict(state.endpoints), output)
        return
    _run_foreground(directory, examples and operator, operator, extras)


def _run_foreground(
    directory: Path, examples: bool, operator: bool = True, extras: Sequence[str] = ()
) -> None:
    site = Site(directory)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with console.status("starting the local site…"):
            site.start(extras=extras)
            if operator:  # aios as a city installs it: its chart, with the images built here
                release.install(site)
            if examples and apply_examples(site):
                wait_accepted(site)
        if examples:
            _wait_for_the_city(site)
            _wait_for_the_scrapes(site)
        site.mark_ready()
        _print_ready(site.state)
        if not operator:
            _print_chart_hint()
        _print_console(site)
        if examples:
            print(site.kubectl(["get", "aios"]), flush=True)
            print("\n".join(wait_serving(site, timeout=0)), flush=True)
            console.print(_next_steps())
        console.print("[dim]Ctrl-C stops the site.[/]")
        stop.wait()
    finally:
        with console.status("stopping the local site…"):
            site.stop()


CITY_TIMEOUT = 600


def _invocation() -> str:
    """This aiosctl as it was called (``.venv/bin/aiosctl``), for the commands it prints
    for a shell that ``aiosctl env`` has not pointed at the site yet."""
    called = Path(sys.argv[0])
    return str(called) if called.name == "aiosctl" else "aiosctl"


def _next_steps() -> str:
    return f"""[bold]Try next[/] (in another shell):
  eval "$({_invocation()} env)"                  # the site's kubectl, aiosctl and endpoints
  kubectl logs statefulset/pm25-alerting-runner -f   # a line per batch of decisions
  kubectl logs deploy/city-alerts -f                 # the alerts they send
  temporal workflow list --query "ExecutionStatus='Running'"   # actions awaiting approval
  aiosctl approve action/<workflow id> \\
      --as alice --as-group street-cleaning-supervisors"""


def _wait_for_the_city(site: Site) -> None:
    """As the walkthrough does (``aiosctl status --wait``); what is not Ready in time is
    shown with why (``aiosctl explain``), and the site stays up for a look."""
    api_client = config.new_client_from_config(config_file=site.endpoints.kubeconfig)
    rows = status.wait_ready(api_client, "default", CITY_TIMEOUT)
    late = [r for r in rows if r.rank < 3]
    if late:
        console.print(f"[yellow]not Ready after {CITY_TIMEOUT}s:[/]")
        console.print(status.table(late, datetime.now(UTC)))
        for row in late:
            console.print(f"  {_invocation()} explain {row.kind.lower()}/{row.name} -n default")


SCRAPE_TIMEOUT = 60


def _wait_for_the_scrapes(site: Site) -> None:
    """The city Ready, its Prometheus has scraped every job once: a query made now (the
    walkthrough's first) finds the operator and the data plane, not the gap of a scrape
    interval. What is not scraped in time is named; the site stays up for a look."""
    if site.monitor_sync is None:
        return
    late = site.monitor_sync.wait_scraped(SCRAPE_TIMEOUT)
    if late:
        console.print(f"[yellow]not scraped after {SCRAPE_TIMEOUT}s:[/] {', '.join(late)}")


def _print_ready(state: SiteState) -> None:
    e = state.endpoints
    console.print(f"[green]aios local site is ready[/] ({state.directory})")
    for label, value in [
        ("Kubernetes", e.kube_api),
        ("Kafka", e.kafka_bootstrap),
        ("Temporal", e.temporal_address),
        ("OPA", e.opa_url),
        ("Triton", f"{e.triton_http} (gRPC {e.triton_grpc})"),
        ("MQTT", e.mqtt_url),
        ("Traces", f"{e.jaeger_url}/api/traces (Jaeger; OTLP in at {e.otlp_url})"),
        ("Metrics", f"{e.prometheus_url}/api/v1/targets (Prometheus)"),
        ("Pods reach", f"this host at {e.host_address}"),
    ]:
        console.print(f"  {label:<11} {value}")
    console.print(
        f'Point your shell at it:  [bold]eval "$({_invocation()} env)"[/]  then  kubectl get aios'
    )


def _print_console(site: Site) -> None:
    """The console's address and who may sign in, once the release serves one."""
    url = release.console_url(site)
    if url is None:
        return
    people = ", ".join(f"{name} ({', '.join(groups)})" for name, groups in LOCAL_PEOPLE.items())
    console.print(
        f"  {'Console':<11} {url} (sign in with a token: {site.directory / 'people'}/NAME.token "
        f"for {people}, or kubectl create token SERVICEACCOUNT)"
    )


def _attached(state: SiteState) -> Site:
    """A handle on the running site ``state`` describes, for reading it (not for starting)."""
    site = Site(Path(state.directory))
    site.endpoints = state.endpoints
    return site


def _print_chart_hint() -> None:
    console.print(
        "No operator runs: install it with the chart, e.g.\n  [bold]helm install aios "
        f"charts/aios -n aios-system --create-namespace -f <({_invocation()} env --helm-values)[/]",
        soft_wrap=True,
    )


def _running(directory: Path) -> bool:
    try:
        state = SiteState.load(directory)
    except FileNotFoundError:
        return False
    try:
        os.kill(state.supervisor_pid, 0)
    except ProcessLookupError:
        return False
    return bool(state.processes)


@app.command()
def down(site_dir: Path | None = SiteDir, output: Output = Format) -> None:
    """Stop every process the local site started."""
    directory = (site_dir or default_site_dir()).resolve()
    stopped = stop_running_site(directory)
    if stopped:
        console.print(f"stopped the site in {directory}")
    else:
        console.print(f"no site in {directory}")
    emit({"directory": str(directory), "stopped": stopped}, output)


@app.command()
def env(
    site_dir: Path | None = SiteDir,
    output: Output = Format,
    helm_values: bool = typer.Option(
        False, "--helm-values", help="Print the Helm chart's values for this site instead."
    ),
) -> None:
    """Print `export` lines for the running site: eval "$(aiosctl env)"."""
    directory = (site_dir or default_site_dir()).resolve()
    try:
        state = SiteState.load(directory)
    except FileNotFoundError as error:
        console.print(f"[red]no site in {directory}[/]: start one with `aiosctl up --detach`")
        raise typer.Exit(1) from error
    if helm_values:
        values = release.local_site_values(state.endpoints, ensure_images())
        print(yaml.safe_dump(values, sort_keys=False), end="")
        return
    site = _attached(state)
    variables = {**site_environment(site), "AIOS_SITE_DIR": str(directory)}
    if state.ready and (console_url := release.console_url(site)):  # a stopped site: no call
        variables["AIOS_CONSOLE_URL"] = console_url
    tools = [state.endpoints.tools_path, *_helm_path(), *_aiosctl_path(directory)]
    variables["PATH"] = ":".join([*tools, os.environ.get("PATH", "")])
    if output is not Output.text:
        emit(variables, output)
        return
    for name, value in variables.items():
        print(f"export {name}={_quote(value)}")


def _helm_path() -> list[str]:
    """Helm's directory once built (`hack/obtain.sh helm`), for the chart walkthrough."""
    built = HELM.home / "bin"
    return [str(built)] if (built / "helm").exists() else []


def _aiosctl_path(directory: Path) -> list[str]:
    """A directory holding this aiosctl alone (``bin/`` of the site), so that the commands
    aiosctl prints (``aiosctl audit trace …``) run as printed in a shell pointed at the site,
    without the virtual environment's python and pip put first as activating it would."""
    script = Path(sys.executable).with_name("aiosctl")
    if not script.exists():
        return []
    own = directory / "bin"
    link = own / "aiosctl"
    if not (link.is_symlink() and link.readlink() == script):
        own.mkdir(exist_ok=True)
        fresh = own / f".aiosctl.{os.getpid()}"
        fresh.unlink(missing_ok=True)
        fresh.symlink_to(script)
        fresh.replace(link)  # atomic: a shell running aiosctl meanwhile finds one or the other
    return [str(own)]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    app()
