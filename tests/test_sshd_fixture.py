"""The real-sshd fixture (tests/sshd.py): three hosts, host-key checks, stdin, client configs, cleanup.

The SSH launch tests rely on each of these; a failure here means the fixture or the machine is
wrong, not the engine.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import paramiko
import psutil
import pytest

from .sshd import HOSTS, Sshd, generate_key, pub_path


def client_with(known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def login(client: paramiko.SSHClient, server: Sshd, host: str, key_path: Path | None = None) -> None:
    client.connect(host, port=server.port, username=server.user, key_filename=str(key_path or server.client_key_path),
                   look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10)


def run(client: paramiko.SSHClient, command: str, stdin_bytes: bytes = b"") -> tuple[int, bytes, bytes]:
    """Run COMMAND, send STDIN_BYTES then EOF; return (exit status, stdout, stderr)."""
    stdin, stdout, stderr = client.exec_command(command, timeout=30)
    if stdin_bytes:
        stdin.write(stdin_bytes)
    stdin.channel.shutdown_write()
    out, err = stdout.read(), stderr.read()
    return stdout.channel.recv_exit_status(), out, err


@pytest.mark.parametrize("host", HOSTS)
def test_each_host_runs_a_command(sshd_module: Sshd, tmp_path: Path, host: str) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd_module.known_hosts_text())
    with client_with(known_hosts) as client:
        login(client, sshd_module, host)
        assert client.get_transport().get_remote_server_key() == sshd_module.host_pkey  # type: ignore[union-attr]
        code, out, err = run(client, "echo hello; echo $SSH_CONNECTION")
    assert (code, err) == (0, b""), sshd_module.stderr_text()
    hello, connection = out.decode().splitlines()
    assert hello == "hello"
    assert connection.split()[2:] == [host, str(sshd_module.port)]  # sshd saw the host we dialled


def test_known_hosts_lines_and_fingerprint(sshd_module: Sshd) -> None:
    lines = sshd_module.known_hosts_text(("127.0.0.2",)).splitlines()
    assert lines == [f"[127.0.0.2]:{sshd_module.port} {sshd_module.host_public_key}"]
    assert sshd_module.host_public_key.startswith("ssh-ed25519 AAAA")
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(pub_path(sshd_module.host_key_path))],
                            capture_output=True, text=True, check=True).stdout
    assert sshd_module.host_fingerprint in listed
    assert sshd_module.host_fingerprint == sshd_module.host_pkey.fingerprint


def test_unknown_host_is_refused(sshd_module: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with client_with(empty) as client, pytest.raises(paramiko.SSHException) as caught:
        login(client, sshd_module, "127.0.0.2")
    assert not isinstance(caught.value, paramiko.AuthenticationException)
    assert f"[127.0.0.2]:{sshd_module.port}" in str(caught.value)


def test_key_for_another_host_only_is_refused(sshd_module: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd_module.known_hosts_text(("127.0.0.1",)))
    with client_with(known_hosts) as client, pytest.raises(paramiko.SSHException, match=r"127\.0\.0\.3"):
        login(client, sshd_module, "127.0.0.3")


def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    old = tmp_path / "known_hosts.old"
    old.write_text(sshd.known_hosts_text())
    old_key, port = sshd.host_public_key, sshd.port
    sshd.regenerate_host_key()
    assert (sshd.port, sshd.host_public_key != old_key) == (port, True)
    with client_with(old) as client, pytest.raises(paramiko.BadHostKeyException) as caught:
        login(client, sshd, "127.0.0.2")
    assert caught.value.key == sshd.host_pkey
    new = tmp_path / "known_hosts.new"
    new.write_text(sshd.known_hosts_text())
    with client_with(new) as client:
        login(client, sshd, "127.0.0.2")
        assert run(client, "echo hello")[:2] == (0, b"hello\n")


def test_wrong_user_key_is_refused(sshd_module: Sshd, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    generate_key(stranger, "stranger")
    with sshd_module.connect():
        pass  # the right key works, so what follows is about the key
    known_hosts = sshd_module.write_known_hosts(tmp_path / "known_hosts")
    with client_with(known_hosts) as client, pytest.raises(paramiko.AuthenticationException):
        login(client, sshd_module, "127.0.0.1", key_path=stranger)


def test_stdin_reaches_the_command(sshd_module: Sshd) -> None:
    secret = os.urandom(32).hex().encode() + b"\n"  # how the engine will hand a worker its secret
    payload = os.urandom(3 << 20) + b"\0\r\n\xff"  # past paramiko's 2 MiB window: flow control works
    with sshd_module.connect("127.0.0.3") as client:
        assert run(client, "head -n 1", secret + b"not read\n") == (0, secret, b"")
        code, out, err = run(client, "cat", payload)
    assert (code, err) == (0, b"")
    assert out == payload


def test_ssh_config_is_usable_by_paramiko(sshd_module: Sshd, tmp_path: Path) -> None:
    config = paramiko.SSHConfig.from_path(str(sshd_module.write_ssh_config(tmp_path / "ssh_config")))
    for host in HOSTS:
        entry = config.lookup(host)
        assert (entry["hostname"], entry["port"], entry["user"]) == (host, str(sshd_module.port), sshd_module.user)
        assert entry["identityfile"] == [str(sshd_module.client_key_path)]
        with client_with(Path(entry["userknownhostsfile"])) as client:
            client.connect(entry["hostname"], port=int(entry["port"]), username=entry["user"],
                           key_filename=entry["identityfile"], look_for_keys=False, allow_agent=False, timeout=10)
            assert run(client, "echo hello")[:2] == (0, b"hello\n")


def test_ssh_config_is_usable_by_openssh(sshd_module: Sshd, tmp_path: Path) -> None:
    config = sshd_module.write_ssh_config(tmp_path / "ssh_config")
    done = subprocess.run(["ssh", "-F", str(config), "127.0.0.2", "echo", "hello"], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr + sshd_module.stderr_text()


def test_stop_kills_sessions_and_leaves_no_process(sshd: Sshd) -> None:
    listener = psutil.Process(sshd.pid)
    clients = [sshd.connect(host) for host in HOSTS]
    try:
        sleepers = []
        for client in clients:  # a command that outlives the test unless stop() kills it
            _, stdout, _ = client.exec_command("echo $$; exec sleep 600")
            sleepers.append(psutil.Process(int(stdout.readline())))
        started = listener.children(recursive=True)
        assert {p.pid for p in sleepers} <= {p.pid for p in started}
        sshd.stop()
        sshd.stop()  # idempotent
    finally:
        for client in clients:
            client.close()
    for p in [listener, *started]:
        assert not p.is_running(), f"{p} is left (a zombie counts: stop() must let its parent reap it)"
    ps = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True, check=True).stdout
    assert str(sshd.config_path) not in ps, ps


def test_start_on_a_taken_port_fails_with_the_log(sshd: Sshd) -> None:
    port = sshd.port
    sshd.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.2", port))
        squatter.listen()
        with pytest.raises(AssertionError, match=rf"could not bind port {port}(.|\n)*127\.0\.0\.2"):
            sshd.start(port)
    assert sshd.pid is None
    sshd.start()  # a free port again
    with sshd.connect("127.0.0.2") as client:
        assert run(client, "echo hello")[:2] == (0, b"hello\n")
