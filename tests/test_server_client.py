"""`octo server` plus `octo client` workers (the octo.py guide's manual mode), over real TCP on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import oracle
from .conftest import JOBS, Running, free_port, octo, octo_env, start_client, start_server


def test_server_with_two_clients(home: Path) -> None:
    job = JOBS / "sec_slow.py"
    server, port = start_server(home, job, OCTO_TEST_PAUSE_S="0.01")
    clients: list[Running] = []
    try:
        # mapfn pauses, so the job outlasts the clients' start-up and both of them get work.
        clients = [start_client(home, port) for _ in range(2)]
        server.wait_for(" joined ", count=2)
        code, out, err = server.finish()
        assert code == 0, err
        assert out == oracle.final_output(job)
        assert "2 connected" in err
        for client in clients:
            code, client_out, client_err = client.finish()
            assert code == 0, client_err
            assert client_out == "", "a client prints nothing on stdout"
    finally:
        for running in [server, *clients]:
            running.kill()


# A client whose every connect attempt prints a line (a Python audit hook; the octo code is unchanged),
# so the test can see it retry before it starts the server.
_CLIENT_REPORTING_CONNECTS = """
import sys

def report(event, args):
    if event == "socket.connect":
        print("test: connect", args[1], file=sys.stderr, flush=True)

sys.addaudithook(report)
from cli.main import main
main()
"""


def test_client_started_before_the_server_retries_until_it_listens(home: Path) -> None:
    job = JOBS / "wordcount_dict.py"
    home.joinpath("secret").write_bytes(os.urandom(32))  # copied from the coordinator, as a user would
    home.joinpath("secret").chmod(0o600)
    port = free_port()
    client = Running(subprocess.Popen(
        [sys.executable, "-c", _CLIENT_REPORTING_CONNECTS, "client", f"127.0.0.1:{port}", "--wait", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=octo_env(home),
        start_new_session=True, stdin=subprocess.DEVNULL))
    server: Running | None = None
    try:
        client.wait_for("test: connect", count=2)  # the first attempt was refused: it is retrying
        assert client.proc.poll() is None, client.stderr_text()
        server, _ = start_server(home, job, port=port)
        code, out, err = server.finish()
        assert code == 0, err
        assert out == oracle.final_output(job)
        code, _, client_err = client.finish()
        assert code == 0, client_err
    finally:
        client.kill()
        if server is not None:
            server.kill()


def test_client_without_a_secret_file_names_it(home: Path) -> None:
    result = octo(home, "client", f"127.0.0.1:{free_port()}", "--wait", "0", timeout_s=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"octo: error: {home / 'secret'}: no such secret file", result.stderr
    assert lines[1].startswith("hint: ") and "--secret-file" in lines[1]


def test_a_world_readable_secret_file_is_refused(home: Path, tmp_path: Path) -> None:
    secret = tmp_path / "loose-secret"
    secret.write_bytes(b"s" * 32)
    secret.chmod(0o644)
    result = octo(home, "client", f"127.0.0.1:{free_port()}", "--secret-file", str(secret), "--wait", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"octo: error: {secret}: the secret is readable by other users (mode 644)",
                                          f"hint: chmod 600 {secret}"]


@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "huge", "short"])
def test_a_secret_that_is_not_a_small_regular_file_gets_one_line(home: Path, tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret"
    if kind == "folder":
        secret.mkdir()
    elif kind == "fifo":
        os.mkfifo(secret, 0o600)
    elif kind == "device":
        secret.symlink_to("/dev/zero")  # read forever, were it read to the end
    else:
        secret.write_bytes(b"s" * (5000 if kind == "huge" else 8))
        secret.chmod(0o600)
    result = octo(home, "client", f"127.0.0.1:{free_port()}", "--secret-file", str(secret), "--wait", "0",
                  timeout_s=30)
    assert result.returncode == 2, result.stderr
    expected = {"folder": "the secret is a folder, not a regular file",
                "fifo": "the secret is a FIFO, not a regular file",
                "device": "the secret is a device, not a regular file",
                "huge": "secret is over 4096 bytes: not a file octostore wrote",
                "short": "secret is 8 bytes, need at least 16"}[kind]
    assert result.stderr.splitlines()[0] == f"octo: error: {secret}: {expected}", result.stderr
    assert "Traceback" not in result.stderr


def test_two_first_runs_racing_share_one_complete_secret(tmp_path: Path) -> None:
    """Many processes create $OCTO_HOME/secret at once: every one reads the same 32 bytes, never a partial file."""
    script = "import sys; from pathlib import Path; from octostore.home import load_or_create_secret; " \
             "sys.stdout.write(load_or_create_secret(Path(sys.argv[1])).hex())"
    for round_ in range(6):
        home = tmp_path / f"home{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", script, str(home)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
        outputs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
        secrets = {out for out, _ in outputs}
        assert secrets == {(home / "secret").read_bytes().hex()} and len(secrets.pop()) == 64
        assert sorted(p.name for p in home.iterdir()) == ["secret"]  # no temporary file left behind
