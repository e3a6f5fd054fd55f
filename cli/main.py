"""``octo``: submit, server, client and results.

click (rather than argparse) because its subcommands, typed options, error
messages for unknown options and ``CliRunner`` test harness are what we would
otherwise write by hand; see docs/decisions.md.

Exit codes: 0 ok, 1 the job failed, 2 bad input (nothing started), 130 Ctrl-C.
stdout belongs to the job's final(); everything octo says goes to stderr.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from octostore import api
from octostore.config import DEFAULT_PORT, MAX_FRAME_BYTES, parse_address
from octostore.errors import OctoError, UserCodeError
from octostore.home import read_secret
from octostore.settings import SETTINGS, Boolean, Choice, Flag, Int, Kind, PathTo, Seconds, Setting

from .show import format_jobs, format_status

log = logging.getLogger("octo")


def _home() -> Path:
    return Path(os.environ.get("OCTO_HOME") or Path.home() / ".octostore")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:  # an internal error: keep its traceback for the bug report
            text += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"octo: {record.levelname.lower()}: {text}"
        return text


class _CurrentStderr:
    """Whatever sys.stderr is at the time of writing: rich's live bar swaps it to print above the bar."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(_CurrentStderr())  # type: ignore[arg-type]
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    if verbose == 0:
        logging.getLogger("octostore.worker").setLevel(logging.WARNING)
    if verbose < 2:
        logging.getLogger("paramiko").setLevel(logging.WARNING)  # its INFO is a line per connection step


def _fail(e: OctoError) -> NoReturn:
    lines = e.message.splitlines() or [""]
    click.echo(f"octo: error: {lines[0]}", err=True)
    for line in lines[1:]:
        click.echo(line, err=True)
    if isinstance(e, UserCodeError) and e.user_traceback:
        click.echo(e.user_traceback.rstrip(), err=True)
    if e.hint:
        click.echo(f"hint: {e.hint}", err=True)
    sys.exit(e.exit_code)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except OctoError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo("octo: interrupted", err=True)
        sys.exit(130)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debug).")
def octo(verbose: int) -> None:
    """octostore: run octo.py-style MapReduce jobs on local or remote workers."""
    _setup_logging(verbose)


def _run_options(fn: Any) -> Any:
    """The options of submit and server that are no setting: the config file, the plan, the job's id."""
    options = [
        click.option("--config", "config_file", type=click.Path(path_type=Path),
                     help="A cluster config file (YAML); see configs/."),
        click.option("--dry-run", is_flag=True, help="Print the resolved plan (hosts, slots, mode) and stop."),
        click.option("--job-id", help="Name the job (default: a timestamp)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _setting_options(command: str) -> Callable[[Any], Any]:
    """The options of `command` built from the settings table (octostore/settings.py), in its order.
    Their defaults are None, so that a value from --config applies unless the flag is given: the
    command line wins, then the file, then octostore's defaults."""
    options = [_option(row, flag) for row in SETTINGS for flag in row.flags if command in flag.commands]

    def add(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return add


def _option(row: Setting, flag: Flag) -> Any:
    """One click option for `flag`, whose value goes to the setting's name (``--lease`` -> lease_s)."""
    if isinstance(row.kind, Boolean):  # --x is a flag; --x/--no-x a pair
        extra: dict[str, Any] = {} if "/" in flag.decl else {"is_flag": True}
        return click.option(flag.decl, row.name, default=None, help=flag.help, **extra)
    return click.option(flag.decl, row.name, type=_click_type(row.kind, flag), help=flag.help)


def _click_type(kind: Kind, flag: Flag) -> Any:
    """The click type that refuses what the setting's kind refuses, so the mistake names the flag."""
    if isinstance(kind, Int):
        return click.IntRange(kind.least, kind.most)
    if isinstance(kind, Seconds):
        least = flag.least if flag.least is not None else 0.0
        return click.FloatRange(min=least, min_open=flag.least is None and not kind.zero_ok)
    if isinstance(kind, Choice):
        return click.Choice(list(kind.meanings))
    if isinstance(kind, PathTo) and kind.exists == "folder":
        return click.Path(file_okay=False, resolve_path=True)
    return None  # text


def _submit(job_file: Path, job_id: str | None, config_file: Path | None, dry_run: bool,
            mode_defaults: dict[str, Any], **flags: Any) -> None:
    config = _run(api.resolve_config, _home(), mode_defaults, config_file, flags)
    if dry_run:
        click.echo(api.describe_plan(config, job_file))
        return
    waits = config.resolved_workers() == 0 and not config.ssh_hosts
    _print_report(_run(api.submit, job_file, config, job_id=job_id, on_listening=_show_address if waits else None))


def _print_report(report: api.JobReport) -> None:
    t = report.totals
    log.info("job %s: done in %.1f s: %d map tasks, %d partitions, %d records in, %d pairs, %d results",
             report.job_id, report.elapsed_s, report.map_tasks, report.partitions, t.records_in, t.pairs_out,
             report.results)
    log.info("peak RSS: coordinator %.0f MiB, workers %.0f MiB; wire: %.1f MiB in, %.1f MiB out",
             report.coordinator_peak_rss_bytes / 2**20, t.worker_peak_rss_bytes / 2**20,
             t.bytes_in / 2**20, t.bytes_out / 2**20)
    peak = max(report.coordinator_peak_rss_bytes, t.worker_peak_rss_bytes)
    if peak > report.memory_budget_bytes:
        log.warning("a process peaked at %.0f MiB, over the memory budget of %.0f MiB (memory_budget); the budget "
                    "sizes octostore's buffers, not the job's own data: a large source value or result, or "
                    "mapfn/reducefn's own use, counts too", peak / 2**20, report.memory_budget_bytes / 2**20)


def _show_address(host: str, port: int) -> None:
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    log.info("waiting for workers: run `octo client %s:%d` on each machine", shown, port)


@octo.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@_run_options
@_setting_options("submit")
def submit(job_file: Path, job_id: str | None, config_file: Path | None, dry_run: bool, **flags: Any) -> None:
    """Run JOB_FILE with local workers (and the SSH hosts of --config, if any)."""
    _submit(job_file, job_id, config_file, dry_run, {}, **flags)


@octo.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@_run_options
@_setting_options("server")
def server(job_file: Path, job_id: str | None, config_file: Path | None, dry_run: bool, **flags: Any) -> None:
    """Run JOB_FILE and wait for `octo client` workers (the octo.py guide's manual mode)."""
    _submit(job_file, job_id, config_file, dry_run, {"bind": "0.0.0.0", "port": DEFAULT_PORT, "workers": 0},
            **flags)


@octo.command()
@click.argument("address")
@click.option("--secret-file", type=click.Path(path_type=Path),
              help="The coordinator's secret (default: $OCTO_HOME/secret).")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to keep retrying while the server starts.")
@click.option("--tls-ca", help="Use TLS, verifying the server's certificate against this CA file (PEM).")
def client(address: str, secret_file: Path | None, wait_s: float, tls_ca: str | None) -> None:
    """Work for the `octo server` at ADDRESS (HOST or HOST:PORT) until its job ends."""
    host_port = _run(parse_address, address)
    secret = _run(read_secret, secret_file or _home() / "secret")
    _run(api.work, host_port, secret, wait_s=wait_s, max_frame_bytes=MAX_FRAME_BYTES, tls_ca=tls_ca)


@octo.command("ssh-launch")
@click.argument("hosts_file", type=click.Path(path_type=Path))
@click.option("--coordinator", required=True, help="The `octo server` to work for, HOST:PORT.")
@click.option("--secret-file", type=click.Path(path_type=Path),
              help="The coordinator's secret (default: $OCTO_HOME/secret).")
@click.option("--accept-new-host-keys", is_flag=True,
              help="Add unknown (never changed) host keys to known_hosts, printing their fingerprints.")
@click.option("--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts).")
@click.option("--ssh-config", help="OpenSSH client config (default: ~/.ssh/config).")
@click.option("--tls-ca",
              help="Workers use TLS, verifying the server against this CA file: the same path on every host.")
def ssh_launch(hosts_file: Path, coordinator: str, secret_file: Path | None, accept_new_host_keys: bool,
               known_hosts: str | None, ssh_config: str | None, tls_ca: str | None) -> None:
    """Start workers over SSH on every host of HOSTS_FILE for a running `octo server`."""
    address = _run(parse_address, coordinator)
    started = _run(api.ssh_launch, hosts_file, address, secret_file or _home() / "secret",
                   accept_new_host_keys=accept_new_host_keys,
                   known_hosts=known_hosts, ssh_config=ssh_config, tls_ca=tls_ca)
    log.info("all %d ssh workers have ended", started)


@octo.command()
@click.argument("job_id")
@click.option("--reload", is_flag=True, help="Run the job file as it is now (after a fix), not the stored copy.")
@_setting_options("resume")
def resume(job_id: str, reload: bool, **flags: Any) -> None:
    """Continue JOB_ID after a crash, a cancel or a failure: only unfinished tasks run again."""
    _print_report(_run(api.resume, _home(), job_id, reload=reload,
                       on_listening=_show_address if flags["workers"] == 0 else None, **flags))


@octo.command()
@click.argument("job_id")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for the coordinator to stop.")
def cancel(job_id: str, wait_s: float) -> None:
    """Stop a running job cleanly; `octo resume JOB_ID` continues it."""
    _run(api.cancel, _home(), job_id, wait_s=wait_s)
    log.info("job %s cancelled; continue it with: octo resume %s", job_id, job_id)


@octo.command()
def jobs() -> None:
    """List every job: id, state, started, duration, tasks done/total."""
    found = _run(api.list_jobs, _home())
    click.echo(format_jobs(found) if found else f"no jobs under {_home() / 'jobs'}")


@octo.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job's phase, tasks by state, attempts, workers, failures and bytes moved."""
    click.echo(format_status(_run(api.job_status, _home(), job_id)))


@octo.command()
@click.argument("job_id")
def results(job_id: str) -> None:
    """Print a job's results again: key<TAB>value lines in key order."""

    def show() -> None:
        out = sys.stdout
        try:
            for key, value in api.results(_home(), job_id):
                out.write(f"{key}\t{value}\n")
            out.flush()
        except BrokenPipeError:  # `octo results ID | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())

    _run(show)


def main() -> None:
    octo(prog_name="octo")


if __name__ == "__main__":
    main()
