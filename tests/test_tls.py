"""TLS between coordinator and workers: real certificates (openssl), real TCP on 127.0.0.1.

TLS adds encryption only (the HMAC handshake still authenticates), so besides
"it works" and "mismatches fail fast with a message naming TLS", one test puts
a recording TCP proxy between a worker and the coordinator and checks that a
marker string from the job never crosses the wire in clear, and does without TLS.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from octostore.api import resolve_config
from octostore.config import Config
from octostore.errors import ConfigError
from octostore.protocol.tls import server_context
from octostore.settings import check_paths_exist

from . import oracle
from .conftest import JOBS, Running, make_cert, octo, start_client, start_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

JOB = JOBS / "wordcount_dict.py"


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    cert, key = make_cert(tmp_path, "node")
    other, _ = make_cert(tmp_path, "other")  # a different self-signed certificate: the wrong CA
    config = tmp_path / "tls.yaml"
    config.write_text("coordinator: {bind: 127.0.0.1}\ntls: {enabled: true, cert: node.pem, key: node.key}\n")
    return {"cert": cert, "key": key, "other": other, "config": config}


def test_submit_with_tls_and_local_workers_matches_the_oracle(home: Path, certs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    job = JOBS / "rendezvous.py"  # both workers join before any task ends, however fast the job
    (tmp_path / "rendezvous").mkdir()
    result = octo(home, "submit", str(job), "--workers", "2", "--config", str(certs["config"]),
                  OCTO_TEST_RENDEZVOUS=str(tmp_path / "rendezvous"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(job)
    assert "2 connected" in result.stderr and "refused" not in result.stderr


def test_server_with_tls_and_a_tls_client(home: Path, certs: dict[str, Path]) -> None:
    server, port = start_server(home, JOB, "--config", str(certs["config"]))
    client = start_client(home, port, "--tls-ca", str(certs["cert"]))
    try:
        code, out, err = server.finish()
        assert code == 0, err
        assert out == oracle.final_output(JOB)
        assert "refused" not in err
        code, _, client_err = client.finish()
        assert code == 0, client_err
    finally:
        server.kill()
        client.kill()


def test_wrong_ca_and_plain_clients_are_refused_and_the_job_still_finishes(home: Path,
                                                                           certs: dict[str, Path]) -> None:
    server, port = start_server(home, JOB, "--config", str(certs["config"]))
    try:
        wrong = octo(home, "client", f"127.0.0.1:{port}", "--tls-ca", str(certs["other"]), timeout_s=30)
        assert wrong.returncode == 2, wrong.stderr
        assert wrong.stderr.splitlines() == [
            f"octo: error: TLS: the certificate of the coordinator at 127.0.0.1:{port} does not verify against "
            f"--tls-ca {certs['other']}: certificate verify failed (self-signed certificate)",
            "hint: pass the CA that signed the coordinator's tls.cert; the certificate must name the address you "
            "dial (an IP address needs an IP subjectAltName)"]
        server.wait_for("refused a peer from 127.0.0.1:")
        assert "TLS handshake failed: TLSV1_ALERT_UNKNOWN_CA" in server.stderr_text()

        started = time.monotonic()
        plain = octo(home, "client", f"127.0.0.1:{port}", timeout_s=60)  # bounded by the handshake timeout
        assert time.monotonic() - started < 25
        assert plain.returncode == 1, plain.stderr
        assert plain.stderr.splitlines() == [
            f"octo: error: the coordinator at 127.0.0.1:{port} closed the connection before its greeting "
            "(peer closed the connection); if it uses TLS (tls.enabled), connect with --tls-ca",
            "hint: pass --tls-ca with the CA that signed the coordinator's tls.cert"]
        server.wait_for("refused a peer", count=2)
        assert "TLS handshake failed: no TLS hello within 10 s (a worker without --tls-ca?)" in server.stderr_text()

        good = start_client(home, port, "--tls-ca", str(certs["cert"]))
        code, out, err = server.finish()
        assert code == 0, err
        assert out == oracle.final_output(JOB)
        assert good.finish()[0] == 0
    finally:
        server.kill()


def test_a_tls_client_to_a_plain_server_fails_fast(home: Path, certs: dict[str, Path]) -> None:
    server, port = start_server(home, JOB)
    try:
        started = time.monotonic()
        result = octo(home, "client", f"127.0.0.1:{port}", "--tls-ca", str(certs["cert"]), timeout_s=30)
        assert time.monotonic() - started < 10
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"octo: error: TLS handshake with the coordinator at 127.0.0.1:{port} failed: WRONG_VERSION_NUMBER; "
            "does it run without TLS?",
            "hint: connect without --tls-ca, or turn TLS on at the coordinator (tls.enabled: true)"]
        server.wait_for("refused a peer from 127.0.0.1:")
        plain = start_client(home, port)
        code, out, err = server.finish()
        assert code == 0, err
        assert out == oracle.final_output(JOB)
        assert plain.finish()[0] == 0
    finally:
        server.kill()


def test_a_missing_ca_file_is_named(home: Path, tmp_path: Path) -> None:
    home.joinpath("secret").write_bytes(b"s" * 32)
    home.joinpath("secret").chmod(0o600)
    result = octo(home, "client", "127.0.0.1:1", "--tls-ca", str(tmp_path / "ca.pem"), "--wait", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"octo: error: --tls-ca {tmp_path / 'ca.pem'}: cannot load the CA certificate: No such file or directory",
        "hint: give the PEM file of the CA that signed the coordinator's certificate "
        "(for a self-signed certificate, the certificate itself)"]


# -- config errors ---------------------------------------------------------------------------------


def submit_refused(home: Path, config: Path) -> list[str]:
    result = octo(home, "submit", str(JOB), "--config", str(config), timeout_s=30)
    assert result.returncode == 2, result.stderr
    return result.stderr.splitlines()


def test_tls_config_errors_in_the_file(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "tls.yaml"
    config.write_text("tls:\n  enabled: true\n  key: node.key\n")
    assert submit_refused(home, config) == [
        f"octo: error: {config}:2: tls.enabled: TLS is on but tls.cert is not set",
        "hint: name the PEM files, e.g. tls: {enabled: true, cert: node.pem, key: node.key}"]
    tmp_path.joinpath("node.pem").write_text("")
    config.write_text("tls:\n  enabled: true\n  cert: node.pem\n  key: node.key\n")
    assert submit_refused(home, config) == [
        f"octo: error: {config}:4: tls.key: file '{tmp_path / 'node.key'}' does not exist",
        f"hint: relative paths start from the config file's folder ({tmp_path})"]


def test_tls_config_errors_in_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        Config(home=tmp_path, tls=True, tls_cert=str(tmp_path / "node.pem"))
    assert (e.value.message, e.value.hint) == (
        "TLS is on but the certificate or key is not set",
        "set both in the config file: tls: {enabled: true, cert: node.pem, key: node.key}")
    tmp_path.joinpath("node.pem").write_text("")
    with pytest.raises(ConfigError) as e:
        check_paths_exist(Config(home=tmp_path, tls=True, tls_cert=str(tmp_path / "node.pem"),
                                 tls_key=str(tmp_path / "node.key")))
    assert (e.value.message, e.value.hint) == (
        f"TLS key {tmp_path / 'node.key'}: no such file",
        "check tls.cert and tls.key; a resumed job reads them from the same paths")
    assert Config(home=tmp_path, tls_cert="nowhere.pem").tls is False  # files are only checked with TLS on


def test_a_certificate_that_is_not_pem_is_refused_before_a_job_exists(home: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    with pytest.raises(ConfigError) as e:
        server_context(str(cert), str(key))
    assert (e.value.message, e.value.hint) == (
        f"tls: cannot load certificate {cert} with key {key}: PEM lib",
        "give PEM files: the certificate (chain) and its unencrypted private key")
    config = tmp_path / "tls.yaml"
    config.write_text("tls: {enabled: true, cert: node.pem, key: node.key}\n")
    assert submit_refused(home, config)[0] == f"octo: error: tls: cannot load certificate {cert} with key {key}: PEM lib"
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())


def test_the_config_file_tls_section_becomes_absolute_config_fields(tmp_path: Path, certs: dict[str, Path]) -> None:
    config = resolve_config(tmp_path, {}, certs["config"], {})
    assert (config.tls, config.tls_cert, config.tls_key, config.tls_ca) == (
        True, str(certs["cert"]), str(certs["key"]), None)
    assert config.resolved_tls_ca() == str(certs["cert"])  # self-signed: its own CA
    assert Config.from_stored(tmp_path, config.stored()) == config  # resume uses the same files


# -- the point of TLS: nothing in clear on the wire ---------------------------------------------------

_MARKER_JOB = '''
source = {f"doc-{i}": "a b c" for i in range(20)}


def mapfn(key, value):
    for word in value.split():
        yield "octostore-tls-marker-" + word, 1


def reducefn(key, values):
    return key, len(values)
'''


class RecordingProxy:
    """Forwards one TCP port to another in threads, keeping every byte that passes either way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.seen = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_the_wire_carries_no_clear_text_with_tls(home: Path, tmp_path: Path, certs: dict[str, Path],
                                                 tls: bool) -> None:
    job = tmp_path / "marker.py"
    job.write_text(_MARKER_JOB)
    server, port = start_server(home, job, *(["--config", str(certs["config"])] if tls else []))
    proxy = RecordingProxy(port)
    client: Running | None = None
    try:
        client = start_client(home, proxy.port, *(["--tls-ca", str(certs["cert"])] if tls else []))
        code, _, err = server.finish()
        assert code == 0, err
        assert client.finish()[0] == 0
    finally:
        server.kill()
        if client is not None:
            client.kill()
        proxy.close()
    assert len(proxy.seen) > 1000  # the job's traffic did go through the proxy
    assert (b"octostore-tls-marker-" in proxy.seen) is not tls
