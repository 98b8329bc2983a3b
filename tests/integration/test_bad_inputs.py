"""A corpus of bad inputs to the real `vpcq`: each is one line, its exit code (2 refused, 3
infrastructure), no traceback, and the log unchanged. Then the process and home checks."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli
from vpcq.cli.parser import MUTATIONS
from vpcq.events.connection import connect

INJECTION = "0.0.0.0/0 -j ACCEPT\nCOMMIT\n*nat\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n*filter\n-A INPUT"


def _fw_item(rule: dict[str, object] | None = None, **fw: object) -> str:
    firewall = {"ingress": [rule]} if rule is not None else {}
    firewall.update(fw)
    return json.dumps([{"kind": "apply-firewall", "vpc": "a", "subnet": "web", "firewall": firewall}])


def _rules(*rules: dict[str, object], **fw: object) -> str:
    return json.dumps({"ingress": list(rules), **fw})


R = {"protocol": "tcp", "action": "allow"}

# (argv, stdin, exit code, a fragment of the one line); stdin feeds `-` files and batches
CORPUS: list[tuple[list[str], str | None, int, str]] = [
    # names: `$` before a trailing newline, and everything else a name must not hold
    (["create-vpc", "nlvpc\n", "10.0.0.0/16"], None, 2, "name: 'nlvpc\\\\n' is not a valid name"),
    (["create-vpc", "Bad_Name", "10.0.0.0/16"], None, 2, "is not a valid name"),
    (["create-vpc", "../../etc", "10.0.0.0/16"], None, 2, "is not a valid name"),
    (["create-vpc", "-x", "10.0.0.0/16"], None, 2, "error"),
    (["create-vpc", "a" * 33, "10.0.0.0/16"], None, 2, "is not a valid name"),
    (["create-vpc", "", "10.0.0.0/16"], None, 2, "is not a valid name"),
    (["create-vpc", "a b", "10.0.0.0/16"], None, 2, "is not a valid name"),
    (["create-vpc", "é", "10.0.0.0/16"], None, 2, "is not a valid name"),
    (["create-vpc", "a\x1b[2J", "10.0.0.0/16"], None, 2, "is not a valid name"),
    (["create-vpc", "a", "10.0.0.0/16", "--interface", "eth0\n"], None, 2, "interface:"),
    (["create-vpc", "a", "10.0.0.0/16", "--interface", "eth0 -j ACCEPT"], None, 2, "interface:"),
    (["create-vpc", "a", "10.0.0.0/16", "--interface", ".."], None, 2, "interface:"),
    (["create-vpc", "a", "10.0.0.0/16", "--interface", "a" * 16], None, 2, "interface:"),
    (["create-vpc", "a", "10.0.0.0/16", "--interface", "eth/0"], None, 2, "interface:"),
    (["create-vpc", "a", "10.0.0.0/16", "--host", "h\n"], None, 2, "host:"),
    (["add-subnet", "a", "web\n", "10.0.1.0/24"], None, 2, "name:"),
    (["delete-vpc", "a\n"], None, 2, "name:"),
    (["peer-vpcs", "a", "b\n"], None, 2, "b:"),
    # networks: reserved ranges with the reason, host bits, shapes
    (["create-vpc", "a", "100.64.0.0/16"], None, 2, "vpcq's link-net pool"),
    (["create-vpc", "a", "100.127.0.0/16"], None, 2, "vpcq's link-net pool"),
    (["create-vpc", "a", "127.0.0.0/8"], None, 2, "the loopback range"),
    (["create-vpc", "a", "224.0.0.0/8"], None, 2, "the multicast range"),
    (["create-vpc", "a", "0.0.0.0/8"], None, 2, "'this network'"),
    (["create-vpc", "a", "169.254.0.0/16"], None, 2, "the link-local range"),
    (["create-vpc", "a", "240.0.0.0/8"], None, 2, "the reserved range"),
    (["create-vpc", "a", "255.255.255.0/24"], None, 2, "the reserved range"),
    (["create-vpc", "a", "96.0.0.0/3"], None, 2, "cidr:"),  # contains the pool
    (["create-vpc", "a", "10.0.0.1/16"], None, 2, "host bits set"),
    (["create-vpc", "a", "10.0.0.0/16\n"], None, 2, "cidr:"),
    (["create-vpc", "a", "10.0.0.0/33"], None, 2, "cidr:"),
    (["create-vpc", "a", "010.0.0.0/16"], None, 2, "cidr:"),
    (["create-vpc", "a", "10.0.0.0"], None, 2, "cidr:"),
    (["create-vpc", "a", "::/0"], None, 2, "cidr:"),
    (["add-subnet", "a", "web", "100.64.0.0/24"], None, 2, "vpcq's link-net pool"),
    # ports and numbers
    (["deploy-app", "a", "web", "--port", "70000"], None, 2, "port:"),
    (["deploy-app", "a", "web", "--port", "0"], None, 2, "port:"),
    (["deploy-app", "a", "web", "--port", "-1"], None, 2, "error"),
    (["replay", "--to", "-5"], None, 2, "invalid sequence number value: '-5'"),
    (["log", "--since", "10000000000000000000000000"], None, 2, "invalid sequence number"),
    (["log", "--since", "-1"], None, 2, "invalid sequence number"),
    (["rollback", "a", "--to", "-1"], None, 2, "invalid sequence number"),
    (["drift", "--at", "-3"], None, 2, "invalid sequence number"),
    (["create-vpc", "a", "10.0.0.0/16", "--timeout", "nan"], None, 2, "--timeout"),
    (["create-vpc", "a", "10.0.0.0/16", "--timeout", "inf"], None, 2, "--timeout"),
    (["create-vpc", "a", "10.0.0.0/16", "--timeout", "-1"], None, 2, "--timeout"),
    (["create-vpc", "a", "10.0.0.0/16", "--timeout", "0"], None, 2, "--timeout"),
    # the JSON batch item: the same checks as a rules file
    (["submit", "-f", "-"], _fw_item({**R, "cidr": INJECTION}), 2,
     "item 1: firewall.ingress.0.cidr: "),
    (["submit", "-f", "-"], _fw_item({**R, "port": "99999"}), 2, "port 99999 is outside 1-65535"),
    (["submit", "-f", "-"], _fw_item({**R, "port": True}), 2, "True is not a port"),
    (["submit", "-f", "-"], _fw_item({**R, "port": "80\n"}), 2, "is not a port"),
    (["submit", "-f", "-"], _fw_item({**R, "protocol": "tcp\n"}), 2, "protocol"),
    (["submit", "-f", "-"], _fw_item(default="allow\n"), 2, "default"),
    (["submit", "-f", "-"], json.dumps([{"kind": "deploy-app", "vpc": "a", "subnet": "web",
                                          "port": True}]), 2, "port:"),
    (["submit", "-f", "-"], json.dumps([{"kind": "create-vpc", "name": "a\n",
                                          "cidr": "10.0.0.0/16"}]), 2, "item 1: name:"),
    (["submit", "-f", "-"], json.dumps([{"kind": "rollback", "vpc": "a", "to_seq": -1}]), 2, "to_seq"),
    (["submit", "-f", "-"], json.dumps([{"kind": "rollback", "vpc": "a", "to_seq": True}]), 2,
     "to_seq"),
    (["submit", "-f", "-"], json.dumps([{"kind": "apply-firewall", "vpc": "a", "subnet": "web",
                                          "firewall": {}, "file_subnet": "x\ny"}]), 2, "file_subnet"),
    (["submit", "-f", "-"], "[" * 100_000, 2, "nested too deep"),
    (["submit", "-f", "-"], json.dumps([1]), 2, "item 1"),
    (["submit", "-f", "-"], "", 2, "no commands"),
    # rules files (stdin)
    (["apply-firewall", "a", "web", "-"], _rules({**R, "port": 80}, {**R, "port": "80"}), 2,
     "ingress rule 2 matches what rule 1 matches"),
    (["apply-firewall", "a", "web", "-"], _rules({**R}, {**R, "cidr": "0.0.0.0/0"}), 2,
     "would never apply"),
    (["apply-firewall", "a", "web", "-"], _rules(*({**R, "port": n + 1} for n in range(15000))), 2,
     "at most 256"),
    (["apply-firewall", "a", "web", "-"], _rules({**R, "port": "90-80"}), 2, "reversed"),
    (["apply-firewall", "a", "web", "-"], _rules({**R, "port": "1-2-3"}), 2, "is not a port"),
    (["apply-firewall", "a", "web", "-"], _rules({**R, "port": 80, "protocol": "icmp"}), 2,
     "makes no sense"),
    (["apply-firewall", "a", "web", "-"], _rules({**R, "cidr": "10.0.0.0/8 -j DROP"}), 2,
     "is not an IPv4 address"),
    (["apply-firewall", "a", "web", "-"], _rules({**R, "cidr": 10}), 2, "is not an IPv4"),
    (["apply-firewall", "a", "web", "-"], _rules({**R, "action": "accept"}), 2, "action"),
    (["apply-firewall", "a", "web", "-"], _rules({**R, "extra": 1}), 2, "extra"),
    (["apply-firewall", "a", "web", "-"], json.dumps({"subnet": "x\ny"}), 2, "subnet"),
    (["apply-firewall", "a", "web", "-"], '{"ingress": ' + "[" * 100_000, 2, "nested too deep"),
    (["apply-firewall", "a", "web", "-"], "not json", 2, "is not JSON"),
    (["apply-firewall", "a", "web", "-"], " " * (1 << 20) + "{}", 2, "over the limit"),
    (["apply-firewall", "a", "web", "/dev/zero"], None, 2, "/dev/zero is a device"),
    (["apply-firewall", "a", "web", "/"], None, 2, "/ is a directory"),
    (["apply-firewall", "a", "web", "/nonexistent.json"], None, 2, "cannot read"),
    (["cleanup", "--host", "nohost"], None, 2, "no VPC is on host 'nohost'"),
    (["cleanup", "--host", "nohost\n"], None, 2, "host:"),
    (["status", "x\ny"], None, 2, "command_id: no command 'x\\ny'"),
]


@pytest.fixture
def env(redis_url, home):
    return {"VPCQ_REDIS_URL": redis_url, "VPCQ_HOME": str(home)}


def log_size(url: str) -> tuple[int, bytes | None]:
    async def go() -> tuple[int, bytes | None]:
        r = await connect(url)
        try:
            return await r.xlen("vpcq:log"), await r.get("vpcq:version")
        finally:
            await r.aclose()

    return asyncio.run(go())


def refused(p: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vpcq: error: "), p.stderr
    assert p.returncode == code, (p.returncode, p.stderr)
    return lines[0]


def test_the_corpus_has_at_least_60_inputs():
    assert len(CORPUS) >= 60


@pytest.mark.parametrize(("argv", "stdin", "code", "fragment"), CORPUS,
                         ids=[f"{i}-{c[0][0]}" for i, c in enumerate(CORPUS)])
def test_a_bad_input_is_one_line_and_appends_nothing(env, redis_url, argv, stdin, code, fragment):
    before = log_size(redis_url)
    if (argv[0] in MUTATIONS or argv[0] == "submit") and "--timeout" not in argv:  # no wait
        argv = [*argv, "--no-wait"]
    line = refused(run_cli(argv, env, stdin=stdin, timeout=60), code)
    assert fragment in line, line
    assert log_size(redis_url) == before


def test_a_fifo_is_refused_without_waiting_for_a_writer(env, tmp_path):
    fifo = tmp_path / "rules.json"
    os.mkfifo(fifo)
    p = run_cli(["apply-firewall", "a", "web", str(fifo)], env, timeout=20)
    assert "is a FIFO, not a regular file" in refused(p, 2)


def test_a_file_that_is_not_utf8_is_one_line(env, tmp_path):
    bad = tmp_path / "rules.json"
    bad.write_bytes(b'{"ingress": [{"action": "allow", "cidr": "\xff"}]}')
    p = run_cli(["apply-firewall", "a", "web", str(bad)], env)
    assert "is not UTF-8 text (byte 0xff at offset 42)" in refused(p, 2)
    p = run_cli(["submit", "-f", str(bad)], env)
    assert "not UTF-8" in refused(p, 2)


def test_a_newline_in_logname_cannot_forge_a_log_line(env, redis_url):
    before = log_size(redis_url)
    p = run_cli(["create-vpc", "a", "10.0.0.0/16", "--no-wait"],
                {**env, "LOGNAME": "root\n     9  2026-01-01  admin@host"})
    assert "actor:" in refused(p, 2)
    assert log_size(redis_url) == before


@pytest.mark.parametrize("url", ["garbage", "redis://:sekrit@127.0.0.1:1/0",
                                 "redis://127.0.0.1:1/0?password=sekrit",
                                 "redis://user:sekrit@[::1:1/0"])
def test_a_bad_redis_url_is_one_line_without_its_password(home, url):
    p = run_cli(["list"], {"VPCQ_REDIS_URL": url, "VPCQ_HOME": str(home)})
    line = refused(p, 3)
    assert "sekrit" not in line


# ---- processes and home --------------------------------------------------------------------


def test_a_vpcq_package_in_the_working_directory_is_not_imported(env, tmp_path):
    """`vpcq drift` (and worker, repair) exec a Python child: it must not run the code of a
    vpcq/ package in the caller's directory (`python -m` puts it first on the path)."""
    planted = tmp_path / "planted"
    (planted / "vpcq" / "workers").mkdir(parents=True)
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').write('planted code ran')\n"
    (planted / "vpcq" / "__init__.py").write_text(code)
    (planted / "vpcq" / "workers" / "__init__.py").write_text(code)
    (planted / "vpcq" / "workers" / "__main__.py").write_text(code)
    exe = shutil.which("vpcq", path=str(Path(sys.executable).parent))
    assert exe is not None
    p = subprocess.run([exe, "drift"], cwd=planted, capture_output=True, text=True, timeout=120,
                       env={**os.environ, **env})
    assert not marker.exists(), p.stderr
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("how", ["other owner", "group-writable", "world-writable", "symlink",
                                 "run/ a symlink", "log/ of another owner"])
def test_a_home_root_could_be_tricked_through_is_refused(tmp_path, redis_url, how):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    if how == "other owner":
        os.chown(home, 65534, 65534)
    elif how == "group-writable":
        home.chmod(0o770)
    elif how == "world-writable":
        home.chmod(0o777)
    elif how == "symlink":
        real = tmp_path / "real"
        home.rename(real)
        home.symlink_to(real)
    elif how == "run/ a symlink":
        (home / "run").symlink_to(tmp_path)
    else:
        (home / "log").mkdir()
        os.chown(home / "log", 65534, 65534)
    (home / "redis.pass").write_text("planted\n")
    for env in ({"VPCQ_HOME": str(home)}, {"VPCQ_HOME": str(home), "VPCQ_REDIS_URL": redis_url}):
        p = run_cli(["list"], env)
        assert "refusing $VPCQ_HOME" in refused(p, 3)
    p = run_cli(["up"], {"VPCQ_HOME": str(home)})
    assert "refusing $VPCQ_HOME" in refused(p, 3)
    mode = stat.S_IMODE(os.lstat(home).st_mode)
    assert how != "other owner" or (os.lstat(home).st_uid == 65534 and mode == 0o700)  # untouched
