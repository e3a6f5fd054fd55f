"""Hosts files (octostore/launch/hosts.py): valid lines, and the exact text of every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from octostore.errors import ConfigError
from octostore.launch.hosts import LINE_SHAPE, Host, parse_host_line, parse_hosts, read_hosts

# -- valid files ---------------------------------------------------------------------------------


def test_defaults_comments_and_blank_lines() -> None:
    text = "# the farm\n\nnode1\n   \n  alice@node2   # inline comment\n"
    assert parse_hosts(text, "hosts.txt") == [Host("node1"), Host("node2", user="alice")]
    assert Host("node1") == Host(host="node1", user=None, port=22, slots=1, python="python3")


def test_every_field() -> None:
    [host] = parse_hosts("alice@node3:2200 slots=4 python=/opt/py/bin/python\n", "hosts.txt")
    assert host == Host("node3", user="alice", port=2200, slots=4, python="/opt/py/bin/python")
    assert host.label == "alice@node3:2200"


@pytest.mark.parametrize("line, host, label", [
    ("[::1]", Host("::1"), "[::1]:22"),
    ("[::1]:2222", Host("::1", port=2222), "[::1]:2222"),
    ("bob@[fe80::1%eth0]:2222 slots=2", Host("fe80::1%eth0", user="bob", port=2222, slots=2),
     "bob@[fe80::1%eth0]:2222"),
    ("10.0.0.7:2022", Host("10.0.0.7", port=2022), "10.0.0.7:2022"),
])
def test_addresses(line: str, host: Host, label: str) -> None:
    assert parse_hosts(line, "hosts.txt") == [host]
    assert host.label == label


def test_the_user_is_split_at_the_last_at_sign() -> None:
    """As OpenSSH does: user names may contain '@' (alice@corp), host names may not."""
    assert parse_hosts("alice@corp@node1", "h") == [Host("node1", user="alice@corp")]


def test_caller_defaults_apply_only_where_a_line_has_none() -> None:
    hosts = parse_hosts("node1\nnode2 slots=8 python=/usr/bin/python3.12\n", "h", slots=4, python="/opt/py")
    assert hosts == [Host("node1", slots=4, python="/opt/py"), Host("node2", slots=8, python="/usr/bin/python3.12")]


def test_same_host_under_other_user_or_port_is_another_entry() -> None:
    assert len(parse_hosts("node1\nalice@node1\nnode1:2222\n", "h")) == 3


def test_blank_line_is_none() -> None:
    assert parse_host_line("   # only a comment", "x:1") is None


def test_read_hosts(tmp_path: Path) -> None:
    path = tmp_path / "hosts.txt"
    path.write_text("node1 slots=2\n")
    assert read_hosts(path, python="/opt/py") == [Host("node1", slots=2, python="/opt/py")]


# -- errors: each one's exact text -----------------------------------------------------------------


def refused(text: str) -> tuple[str, str | None]:
    with pytest.raises(ConfigError) as info:
        parse_hosts(text, "hosts.txt")
    return info.value.message, info.value.hint


def test_port_not_a_number_is_style_guides_example() -> None:
    text = "\n".join(["node1", "node2", "# more", "", "node4", "node5", "alice@node3:ssh"])
    assert refused(text) == ("hosts.txt:7: port 'ssh' is not a number in 'alice@node3:ssh'",
                             "lines look like [user@]host[:port] [slots=N] [python=PATH]")


@pytest.mark.parametrize("line, message, hint", [
    ("node1:70000", "port 70000 is out of range in 'node1:70000'", "ports are 1..65535"),
    ("node1:0", "port 0 is out of range in 'node1:0'", "ports are 1..65535"),
    ("node1:", "empty port in 'node1:'", LINE_SHAPE),
    ("node1:²", "port '²' is not a number in 'node1:²'", LINE_SHAPE),
    ("alice@:22", "empty host in 'alice@:22'", LINE_SHAPE),
    (":22", "empty host in ':22'", LINE_SHAPE),
    ("@node1", "empty user in '@node1'", LINE_SHAPE),
    ("-oProxyCommand=x@node1", "user '-oProxyCommand=x' starts with '-' in '-oProxyCommand=x@node1'",
     "user names cannot start with '-'"),
    ("-node1", "host '-node1' is not a host name or address in '-node1'",
     f"host names use letters, digits, '.', '-' and '_'; {LINE_SHAPE}"),
    ("node/1", "host 'node/1' is not a host name or address in 'node/1'",
     f"host names use letters, digits, '.', '-' and '_'; {LINE_SHAPE}"),
    ("fe80::1", "too many ':' in 'fe80::1'", f"put an IPv6 address in brackets: [::1]:2222; {LINE_SHAPE}"),
    ("[::1:2222", "missing ']' in '[::1:2222'", "write an IPv6 address as [::1] or [::1]:2222"),
    ("[::1]2222", "unexpected '2222' after ']' in '[::1]2222'", LINE_SHAPE),
    ("[node1]:22", "'node1' in brackets is not an IPv6 address in '[node1]:22'",
     "brackets are for IPv6 addresses only: [::1]:2222, but node1:2222"),
    ("node1 slot=4", "unknown field 'slot' in 'node1 slot=4'", f"did you mean 'slots'? {LINE_SHAPE}"),
    ("node1 cores=4", "unknown field 'cores' in 'node1 cores=4'", f"the fields are slots and python; {LINE_SHAPE}"),
    ("node1 slots=0", "slots '0' is not a positive whole number", "write slots=N with N >= 1, e.g. slots=4"),
    ("node1 slots=four", "slots 'four' is not a positive whole number", "write slots=N with N >= 1, e.g. slots=4"),
    ("node1 slots=-2", "slots '-2' is not a positive whole number", "write slots=N with N >= 1, e.g. slots=4"),
    ("node1 slots=2 slots=4", "field 'slots' is given twice in 'node1 slots=2 slots=4'", "give slots= once"),
    ("node1 python=", "field 'python' has no value in 'node1 python='", "write python=VALUE with no spaces"),
    ("node1 node2", "unexpected 'node2' in 'node1 node2'", f"one host per line; {LINE_SHAPE}"),
    ("node1 =4", "unexpected '=4' in 'node1 =4'", f"one host per line; {LINE_SHAPE}"),
])
def test_bad_line(line: str, message: str, hint: str) -> None:
    assert refused(f"# farm\n{line}\n") == (f"hosts.txt:2: {message}", hint)


def test_duplicate_host_names_both_lines() -> None:
    assert refused("alice@node1\nnode2\nalice@NODE1:22 slots=4\n") == (
        "hosts.txt:3: host 'alice@NODE1:22' is listed twice (first at hosts.txt:1)",
        "list each host once; to start more workers there, raise its slots=N")


def test_duplicate_ipv6_host() -> None:
    message, _ = refused("[::1]:2222\n[::1]:2222 slots=2\n")
    assert message == "hosts.txt:2: host '[::1]:2222' is listed twice (first at hosts.txt:1)"


def test_missing_hosts_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_hosts(tmp_path / "nope.txt")
    assert (info.value.message, info.value.hint) == (f"{tmp_path / 'nope.txt'}: hosts file not found",
                                                     "check the path; a hosts file has one host per line")


def test_hosts_file_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder, not a hosts file"):
        read_hosts(tmp_path)


def test_errors_name_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "farm.txt"
    path.write_text("node1\nnode2:ssh\n")
    with pytest.raises(ConfigError) as info:
        read_hosts(path)
    assert info.value.message == f"{path}:2: port 'ssh' is not a number in 'node2:ssh'"
