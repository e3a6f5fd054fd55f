"""Workers over SSH, against a real sshd on 127.0.0.1-3 (tests/sshd.py): keys checked, secret on stdin only."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import psutil

from . import oracle
from .conftest import JOBS, Running, make_cert, octo, start_octo, start_server
from .sshd import HOSTS, Sshd

CANARY = JOBS / "canary.py"
SLOW = dict(OCTO_TEST_PAUSE_S="0.01")


def hosts_file(tmp_path: Path, sshd: Sshd, hosts: tuple[str, ...] = HOSTS, extra: str = "") -> Path:
    path = tmp_path / "hosts.txt"
    lines = [f"{h}:{sshd.port} python={sys.executable}" for h in hosts]
    path.write_text("# three hosts, one machine\n" + "\n".join(lines) + "\n" + extra)
    return path


def cluster(tmp_path: Path, sshd: Sshd, hosts: Path, known_hosts: Path | None = None) -> tuple[Path, list[str]]:
    """A config file for 0 local workers and the SSH hosts, and the flags pointing at the test's ssh files."""
    config = tmp_path / "cluster.yaml"
    config.write_text(f"workers: 0\ncoordinator: {{bind: 127.0.0.1, port: 0}}\nssh:\n  hosts_file: {hosts.name}\n")
    known = known_hosts or sshd.write_known_hosts(tmp_path / "known_hosts")
    ssh_config = sshd.write_ssh_config(tmp_path / "ssh_config", known)
    return config, ["--config", str(config), "--known-hosts", str(known), "--ssh-config", str(ssh_config)]


def test_a_job_over_three_ssh_hosts_gives_the_exact_output(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    config, flags = cluster(tmp_path, sshd, hosts_file(tmp_path, sshd))
    result = octo(home, "submit", str(CANARY), *flags, "--job-id", "over-ssh")
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(CANARY)
    assert "started 3 worker(s) over ssh on 3 host(s)" in result.stderr


def test_dry_run_prints_the_plan(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    _, flags = cluster(tmp_path, sshd, hosts_file(tmp_path, sshd))
    result = octo(home, "submit", str(CANARY), *flags, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"ssh host: 127.0.0.2:{sshd.port}  slots=1  python={sys.executable}" in result.stdout
    assert "ssh workers: 3 on 3 host(s)" in result.stdout and "local workers: 0" in result.stdout
    assert not (home / "jobs").exists()


def test_an_unknown_host_key_is_refused_with_its_fingerprint(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    _, flags = cluster(tmp_path, sshd, hosts_file(tmp_path, sshd, hosts=("127.0.0.2",)), known_hosts=empty)
    result = octo(home, "submit", str(CANARY), *flags)
    assert result.returncode == 2, result.stderr
    assert (f"octo: warning: 127.0.0.2:{sshd.port}: unknown host key (ssh-ed25519 {sshd.host_fingerprint}); "
            "going on without it (hint: check the fingerprint, then run again with --accept-new-host-keys)") in result.stderr
    assert "octo: error: no worker could start on any ssh host" in result.stderr


def test_accept_new_host_keys_adds_and_prints_them(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    _, flags = cluster(tmp_path, sshd, hosts_file(tmp_path, sshd, hosts=("127.0.0.2", "127.0.0.3")), known_hosts=known)
    result = octo(home, "submit", str(CANARY), *flags, "--accept-new-host-keys")
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(CANARY)
    assert f"accepted the new host key ssh-ed25519 {sshd.host_fingerprint}" in result.stderr
    assert f"[127.0.0.2]:{sshd.port} ssh-ed25519 " in known.read_text()


def test_a_changed_host_key_is_refused(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    old = sshd.host_fingerprint
    sshd.regenerate_host_key()
    _, flags = cluster(tmp_path, sshd, hosts_file(tmp_path, sshd, hosts=("127.0.0.2",)), known_hosts=known)
    result = octo(home, "submit", str(CANARY), *flags, "--accept-new-host-keys")  # never accepts a CHANGED key
    assert result.returncode == 2, result.stderr
    assert (f"127.0.0.2:{sshd.port}: the host key has CHANGED: it offers ssh-ed25519 {sshd.host_fingerprint}, "
            f"known_hosts has {old}") in result.stderr


def test_a_host_that_is_down_is_reported_and_the_job_goes_on(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    hosts = hosts_file(tmp_path, sshd, hosts=("127.0.0.2",), extra=f"127.0.0.9:{sshd.port} python={sys.executable}\n")
    _, flags = cluster(tmp_path, sshd, hosts)
    result = octo(home, "submit", str(CANARY), *flags)
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(CANARY)
    assert f"octo: warning: 127.0.0.9:{sshd.port}: cannot connect" in result.stderr


def remote_workers() -> list[psutil.Process]:
    """Worker processes started through sshd (their parent chain contains an sshd)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "octostore.worker" in " ".join(proc.info["cmdline"] or []):
            chain = [p.name() for p in proc.parents()]
            if any("sshd" in name for name in chain):
                found.append(proc)
    return found


def test_the_secret_is_in_no_argv_or_environ_and_no_worker_outlives_the_coordinator(
        home: Path, tmp_path: Path, sshd: Sshd) -> None:
    _, flags = cluster(tmp_path, sshd, hosts_file(tmp_path, sshd))
    run = Running(start_octo(home, "submit", str(CANARY), *flags, "--job-id", "secret", **SLOW))
    try:
        run.wait_for(" joined ", count=3)
        secret = (home / "secret").read_bytes()
        workers = remote_workers()
        assert len(workers) == 3, [w.cmdline() for w in workers]
        for worker in workers:
            argv = Path(f"/proc/{worker.pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
            for form in (secret, secret.hex().encode()):
                assert form not in argv and form not in environ
        os.kill(run.proc.pid, signal.SIGKILL)  # the coordinator dies; the channels close; so must the workers
        deadline = time.monotonic() + 15
        while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
            assert time.monotonic() < deadline, [w.pid for w in workers if w.is_running()]
            time.sleep(0.1)
    finally:
        run.kill()


def test_ssh_launch_starts_workers_for_a_running_server(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    server, port = start_server(home, CANARY, "--bind", "127.0.0.1", **SLOW)  # long enough for all 3 to join
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    try:
        launched = octo(home, "ssh-launch", str(hosts_file(tmp_path, sshd)), "--coordinator", f"127.0.0.1:{port}",
                        "--known-hosts", str(known), "--ssh-config", str(sshd.write_ssh_config(tmp_path / "c", known)))
        assert launched.returncode == 0, launched.stderr
        assert "all 3 ssh workers have ended" in launched.stderr
        code, out, err = server.finish()
        assert code == 0, err
        assert out == oracle.final_output(CANARY)
    finally:
        server.kill()


def test_a_bad_hosts_file_names_the_file_and_line(home: Path, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("node1\nalice@node3:ssh\n")
    result = octo(home, "ssh-launch", str(hosts), "--coordinator", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.splitlines()[:2] == [
        f"octo: error: {hosts}:2: port 'ssh' is not a number in 'alice@node3:ssh'",
        "hint: lines look like [user@]host[:port] [slots=N] [python=PATH]"]


def test_resume_on_an_ssh_cluster_brings_the_same_hosts_back(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    """kill -9 the coordinator mid-job: its SSH workers die with it, and `octo resume` starts them again."""
    _, flags = cluster(tmp_path, sshd, hosts_file(tmp_path, sshd, hosts=("127.0.0.2", "127.0.0.3")))
    killed = octo(home, "submit", str(CANARY), *flags, "--job-id", "ssh-crash", "--map-tasks", "20",
                  OCTO_FAILPOINTS="after-map-commit:6", **SLOW)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = octo(home, "resume", "ssh-crash", "--progress", "off", **SLOW)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == oracle.final_output(CANARY)
    assert "started 2 worker(s) over ssh on 2 host(s)" in resumed.stderr
    done = re.search(r"(\d+) of 20 map", resumed.stderr)  # the group commit holding the 6th may hold a 7th
    assert done and 6 <= int(done.group(1)) < 20, resumed.stderr


def test_ssh_workers_use_tls_with_the_ca_path(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    """The coordinator passes its CA path to SSH workers (`--tls-ca`); a plain worker would be refused."""
    cert, _ = make_cert(tmp_path, "node")
    config, flags = cluster(tmp_path, sshd, hosts_file(tmp_path, sshd, hosts=("127.0.0.2", "127.0.0.3")))
    config.write_text(config.read_text() + "tls: {enabled: true, cert: node.pem, key: node.key}\n")
    result = octo(home, "submit", str(CANARY), *flags)
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(CANARY)
    assert "started 2 worker(s) over ssh on 2 host(s)" in result.stderr and "refused" not in result.stderr


def test_ssh_launch_with_tls_ca(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    cert, _ = make_cert(tmp_path, "node")
    config = tmp_path / "tls.yaml"
    config.write_text("tls: {enabled: true, cert: node.pem, key: node.key}\n")
    server, port = start_server(home, CANARY, "--config", str(config), **SLOW)
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    try:
        launched = octo(home, "ssh-launch", str(hosts_file(tmp_path, sshd)), "--coordinator", f"127.0.0.1:{port}",
                        "--known-hosts", str(known), "--ssh-config", str(sshd.write_ssh_config(tmp_path / "c", known)),
                        "--tls-ca", str(cert))
        assert launched.returncode == 0, launched.stderr
        assert "all 3 ssh workers have ended" in launched.stderr
        code, out, err = server.finish()
        assert code == 0, err
        assert out == oracle.final_output(CANARY)
        assert "refused" not in err
    finally:
        server.kill()


def test_ssh_launch_fails_when_every_worker_fails(home: Path, tmp_path: Path, sshd: Sshd) -> None:
    """Every worker gets the wrong secret: they all exit non-zero, and so must ssh-launch."""
    server, port = start_server(home, CANARY, "--bind", "127.0.0.1")
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    wrong = tmp_path / "wrong-secret"
    wrong.write_bytes(b"w" * 32)
    wrong.chmod(0o600)
    try:
        launched = octo(home, "ssh-launch", str(hosts_file(tmp_path, sshd, hosts=("127.0.0.2",))), "--coordinator",
                        f"127.0.0.1:{port}", "--secret-file", str(wrong), "--known-hosts", str(known),
                        "--ssh-config", str(sshd.write_ssh_config(tmp_path / "c", known)))
        assert launched.returncode == 1, launched.stderr
        assert "octo: error: all 1 ssh workers failed (exit statuses [1])" in launched.stderr
    finally:
        server.kill()


def test_a_loopback_coordinator_warns_about_far_ssh_hosts(home: Path, tmp_path: Path) -> None:
    """Hosts named other than loopback cannot be assumed to reach 127.0.0.1: say so.  The host is this
    machine under its own name, on a port where nothing listens, so no traffic leaves the machine."""
    name = socket.gethostname()
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(f"{name}:1 python={sys.executable}\n")
    config = tmp_path / "cluster.yaml"
    config.write_text("workers: 1\ncoordinator: {bind: 127.0.0.1, port: 0}\nssh:\n  hosts_file: hosts.txt\n")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = octo(home, "submit", str(JOBS / "combiner.py"), "--config", str(config), "--known-hosts", str(empty))
    assert f"ssh workers on {name}:1 will dial 127.0.0.1:" in result.stderr, result.stderr
