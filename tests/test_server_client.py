"""`octo server` plus `octo client` workers (the octo.py guide's manual mode), over real TCP on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_a_world_readable_secret_file_is_warned_about(home: Path, tmp_path: Path) -> None:
    secret = tmp_path / "loose-secret"
    secret.write_bytes(b"s" * 32)
    secret.chmod(0o644)
    result = octo(home, "client", f"127.0.0.1:{free_port()}", "--secret-file", str(secret), "--wait", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"octo: warning: {secret} is readable by other users (mode 644): chmod 600 {secret}")
