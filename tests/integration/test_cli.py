"""The `vpcq` command end to end (no kernel): exit codes, one-line errors, output formats."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from tests.helpers import Client, run_cli
from vpcq.events.schema import ChangeFailed

MUTATIONS = ["create-vpc", "add-subnet", "delete-subnet", "deploy-app", "stop-app",
             "apply-firewall", "peer-vpcs", "unpeer-vpcs", "delete-vpc", "cleanup", "rollback"]


@pytest.fixture
def env(redis_url, home):
    return {"VPCQ_REDIS_URL": redis_url, "VPCQ_HOME": str(home)}


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert lines[0].startswith("vpcq: error: "), lines[0]
    return lines[0]


def test_help_shows_examples_and_every_command(env):
    p = run_cli(["--help"], env)
    assert p.returncode == 0
    for name in [*MUTATIONS, "submit", "list", "log", "status", "replay", "drift", "repair", "fsck", "up",
                 "down", "worker"]:
        assert name in p.stdout
    assert "reconcile" not in p.stdout  # the old name of repair: it still works, unlisted
    assert "vpcq create-vpc my-vpc 10.0.0.0/16" in p.stdout


@pytest.mark.parametrize("sub", [*MUTATIONS, "submit", "list", "log", "status", "replay", "drift",
                                 "repair", "up"])
def test_every_sub_command_help_has_an_example(env, sub):
    p = run_cli([sub, "--help"], env)
    assert p.returncode == 0 and "example:" in p.stdout, p.stdout


def test_the_cli_never_imports_pyroute2(env):
    code = (
        "import sys\n"
        "from vpcq.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "main(['list'])\n"
        "print('pyroute2' in sys.modules)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["create-vpc", "Bad_Name", "10.0.0.0/16"], "name: 'Bad_Name' is not a valid name"),
        (["create-vpc", "a", "10.0.0.1/16"], "cidr:"),
        (["add-subnet", "nope", "web", "10.0.1.0/24"], "vpc: no VPC named 'nope'"),
        (["deploy-app", "a", "web", "--port", "70000"], "port:"),
        (["add-subnet", "a", "web", "10.0.1.0/24", "--type", "dmz"], "type:"),
        (["apply-firewall", "a", "web", "/nonexistent.json"], "file: cannot read"),
        (["peer-vpcs", "a", "a"], "b: a VPC cannot be peered with itself"),
        (["create-vpc"], "the following arguments are required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_rejected_commands_print_one_line_exit_2_and_append_nothing(env, redis_url, args, fragment):
    p = run_cli(args, env)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert fragment in one_line_error(p)
    assert Client(redis_url).events() == []


def test_unreachable_redis_is_one_line_and_exit_3(home, tmp_path):
    env = {"VPCQ_REDIS_URL": f"unix://{tmp_path}/nothing.sock", "VPCQ_HOME": str(home)}
    p = run_cli(["create-vpc", "a", "10.0.0.0/16"], env)
    assert p.returncode == 3
    line = one_line_error(p)
    # someone else's Redis: `vpcq up` would not start it, so it is not suggested
    assert "cannot reach Redis at unix://" in line and "vpcq up" not in line
    p = run_cli(["list"], env)
    assert p.returncode == 3
    p = run_cli(["list"], {"VPCQ_HOME": str(home)})  # the embedded one, not started
    assert p.returncode == 3 and "`vpcq up` starts the embedded instance" in one_line_error(p)


def test_no_wait_prints_the_command_id_and_status_tells_its_fate(env, redis_url):
    p = run_cli(["create-vpc", "a", "10.0.0.0/16", "--no-wait"], env)
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    assert len(cid) == 16
    p = run_cli(["status", cid, "--json"], env)
    assert p.returncode == 4  # pending: no worker in this test
    assert json.loads(p.stdout)["status"] == "pending"
    p = run_cli(["status", "nope"], env)
    assert p.returncode == 2
    # a worker's report (appended as a worker does): the command has left the state
    Client(redis_url).report(ChangeFailed(command_id=cid, vpcs=("a",), reason="no uplink"))
    assert cid not in Client(redis_url).state().commands
    p = run_cli(["status", cid], env)
    assert p.returncode == 1 and p.stdout == f"{cid} create-vpc failed: no uplink\n"


def test_waiting_without_a_worker_times_out_with_a_hint(env):
    p = run_cli(["create-vpc", "a", "10.0.0.0/16", "--timeout", "0.5"], env)
    assert p.returncode == 4
    assert "is a worker running?" in p.stderr


def test_a_host_with_no_worker_up_is_named_while_its_commands_wait(env):
    t0 = time.monotonic()
    p = run_cli(["submit", "-f", "-", "--timeout", "3"], env,
                stdin="create-vpc a 10.0.0.0/16\ncreate-vpc b 10.1.0.0/16 --host edge\n")
    assert p.returncode == 4
    lines = p.stderr.splitlines()
    assert "vpcq: no worker of host 'default' is up (start one: `vpcq up`); waiting up to 3 s" in lines
    assert ("vpcq: no worker of host 'edge' is up (start one: `VPCQ_HOST=edge vpcq worker`); "
            "waiting up to 3 s") in lines
    assert time.monotonic() - t0 >= 3  # a hint: it still waits for a worker to come


def test_list_log_and_replay(env):
    for args in (["create-vpc", "my-vpc", "10.0.0.0/16"],
                 ["add-subnet", "my-vpc", "web-subnet", "10.0.1.0/24", "--type", "public"],
                 ["add-subnet", "my-vpc", "db-subnet", "10.0.2.0/24"]):
        assert run_cli([*args, "--no-wait"], env).returncode == 0
    p = run_cli(["list", "--json"], env)
    data = json.loads(p.stdout)
    (vpc,) = data["vpcs"]
    web = next(s for s in vpc["subnets"] if s["name"] == "web-subnet")
    assert (web["namespace"], web["address"], web["gateway"]) == \
        ("my-vpc-web-subnet", "10.0.1.1", "10.0.1.254")
    assert vpc["uplink"]["a_if"].startswith("vq")
    assert data["workers"] == {"default": 0}  # none in this test
    text = run_cli(["list"], env).stdout
    assert "VPC my-vpc" in text and "web-subnet" in text and "private" in text
    assert text.endswith("\nworkers up: 0 on default\n")
    lines = run_cli(["log", "--json"], env).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, 7))
    assert {"seq", "type", "time", "actor", "command_id", "correlation_id", "vpcs"} <= set(events[0])
    assert run_cli(["log", "--since", "4"], env).stdout.count("\n") == 2
    assert "web-subnet" in run_cli(["log", "--vpc", "my-vpc"], env).stdout
    past = json.loads(run_cli(["replay", "--to", "2", "--json"], env).stdout)
    assert past["seq"] == 2 and past["vpcs"][0]["subnets"] == []


@pytest.mark.parametrize(("argv", "says"), [
    (["replay"], "`vpcq replay` needs --to SEQ: `vpcq list` shows the state now, and `vpcq repair` "
                 "rebuilds the kernel from the log"),
    (["replay", "--to", "2", "--dry-run"], "`vpcq drift --at SEQ` lists the steps"),
])
def test_what_replay_did_besides_replaying_is_refused_with_the_command_that_does_it(env, argv, says):
    p = run_cli(argv, env)
    assert p.returncode == 2 and says in one_line_error(p)


def test_submit_runs_one_command_or_a_batch(env, tmp_path):
    p = run_cli(["submit", "create-vpc", "prod", "10.1.0.0/16", "--no-wait"], env)
    assert p.returncode == 0, p.stderr
    batch = tmp_path / "batch.txt"
    batch.write_text(
        "# a comment\n\nadd-subnet prod web 10.1.1.0/24 --type public\n"
        "add-subnet prod db 10.1.2.0/24  # trailing comment\n"
    )
    p = run_cli(["submit", "-f", str(batch), "--no-wait"], env)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.split()) == 2


def test_a_bad_batch_line_rejects_the_whole_batch_with_its_line_number(env, redis_url, tmp_path):
    p = run_cli(["submit", "-f", "-", "--no-wait"], env,
                stdin="create-vpc a 10.0.0.0/16\n\nadd-subnet a web 10.0.1.0/24\n"
                      "add-subnet a db 10.0.1.0/25\n")
    assert p.returncode == 2
    assert "line 4: cidr:" in one_line_error(p)
    p = run_cli(["submit", "-f", "-", "--no-wait"], env, stdin="create-vpc a 10.0.0.0/16\nbogus x\n")
    assert p.returncode == 2 and "line 2:" in one_line_error(p)
    assert Client(redis_url).events() == []


def test_a_json_batch_takes_command_lines_and_objects(env, redis_url, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"ingress": [{"port": 80, "protocol": "tcp", "action": "allow"}]}))
    items = [
        "create-vpc a 10.0.0.0/16",
        {"kind": "add-subnet", "vpc": "a", "name": "web", "cidr": "10.0.1.0/24", "type": "public"},
        {"kind": "add-subnet", "vpc": "a", "name": "db", "cidr": "10.0.2.0/24"},
        {"kind": "apply-firewall", "vpc": "a", "subnet": "web", "file": str(rules)},
        {"kind": "apply-firewall", "vpc": "a", "subnet": "db",
         "firewall": {"ingress": [{"protocol": "tcp", "port": "5432", "cidr": "10.0.1.0/24",
                                   "action": "allow"}], "default": "deny"}},
    ]
    p = run_cli(["submit", "-f", "-", "--no-wait"], env, stdin=json.dumps(items, indent=1))
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.split()) == 5
    subnets = Client(redis_url).state().vpcs["a"].subnets
    assert subnets["web"].public and not subnets["db"].public
    assert [(r.port, r.action) for r in subnets["web"].firewall.ingress] == [("80", "allow")]
    assert subnets["db"].firewall.default == "deny"
    assert subnets["db"].firewall.ingress[0].cidr == "10.0.1.0/24"
    # an object is a command's kind and args as `vpcq log --json` shows them
    logged = [json.loads(x)["event"] for x in run_cli(["log", "--json"], env).stdout.splitlines()]
    commands = [{"kind": e["kind"], **e["args"]} for e in logged if e["type"] == "CommandAccepted"]
    assert commands[1:3] == [items[1], {**items[2], "type": "private"}]


def test_a_bad_json_batch_item_rejects_the_whole_batch_with_its_number(env, redis_url):
    for stdin, where in [
        ('["create-vpc a 10.0.0.0/16", "create-vpc b 10.0.0.0/33"]', "item 2: cidr:"),
        ('["create-vpc a 10.0.0.0/16", {"kind": "create-vpc", "name": "a", "cidr": "10.9.0.0/16"}]',
         "item 2: name: a VPC named 'a' already exists"),
        ('["create-vpc a 10.0.0.0/16", {"kind": "frobnicate"}]', "item 2:"),
        ('["create-vpc a 10.0.0.0/16", 7]', "item 2: command: an item is a command line or an object"),
        ('[\n"create-vpc a 10.0.0.0/16",\n]', "line 3: file: not a JSON list"),
        ('["create-vpc a 10.0.0.0/16" "x"]', "line 1: file: not a JSON list"),
    ]:
        p = run_cli(["submit", "-f", "-", "--no-wait"], env, stdin=stdin)
        assert p.returncode == 2, (stdin, p.stdout)
        assert where in one_line_error(p), (stdin, p.stderr)
    p = run_cli(["submit", "-f", "-", "--no-wait"], env, stdin='[]')
    assert p.returncode == 2 and "no commands in the batch" in one_line_error(p)
    assert Client(redis_url).events() == []


def test_apply_firewall_reads_the_tutorial_json(env, tmp_path, redis_url):
    for args in (["create-vpc", "my-vpc", "10.0.0.0/16"],
                 ["add-subnet", "my-vpc", "web-subnet", "10.0.1.0/24"]):
        run_cli([*args, "--no-wait"], env)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"subnet": "10.0.1.0/24", "ingress": [
        {"port": 80, "protocol": "tcp", "action": "allow"},
        {"port": 22, "protocol": "tcp", "action": "deny"}]}))
    p = run_cli(["apply-firewall", "my-vpc", "web-subnet", str(rules), "--no-wait"], env)
    assert p.returncode == 0, p.stderr
    fw = Client(redis_url).state().vpcs["my-vpc"].subnets["web-subnet"].firewall
    assert [(r.port, r.action) for r in fw.ingress] == [("80", "allow"), ("22", "deny")]
    rules.write_text("{not json")
    p = run_cli(["apply-firewall", "my-vpc", "web-subnet", str(rules)], env)
    assert p.returncode == 2 and "is not JSON" in one_line_error(p)


def test_vpcctl_is_the_same_command():
    from importlib.metadata import entry_points

    eps = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert eps["vpcctl"] == eps["vpcq"] == "vpcq.cli.main:main"


def test_up_and_down_manage_an_embedded_redis(tmp_path):
    home = tmp_path / "h"
    env = {"VPCQ_HOME": str(home)}
    env_clear = {k: v for k, v in os.environ.items() if k != "VPCQ_REDIS_URL"}
    run = lambda args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "vpcq.cli.main", *args], capture_output=True, text=True,
        env={**env_clear, **env}, timeout=60)
    try:
        p = run(["up", "--workers", "0"])
        assert p.returncode == 0, p.stderr
        assert "started the supervisor" in p.stdout and "started redis-server" in p.stdout
        assert p.stdout.splitlines()[-1] == "up: redis-server and 0 worker(s) running"
        sock = home / "run" / "redis.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / "redis.pass").stat().st_mode) == 0o600
        conf = (home / "redis.conf").read_text()
        assert "appendfsync always" in conf and "port 0" in conf
        p = run(["up", "--workers", "0"])
        assert p.stdout == "up: redis-server and 0 worker(s) running\n"  # idempotent
        assert run(["create-vpc", "a", "10.0.0.0/16", "--no-wait"]).returncode == 0
        p = run(["down"])
        assert p.returncode == 0 and p.stdout == "stopped supervisor, redis-server\n"
        assert run(["list"]).returncode == 3
        run(["up", "--workers", "0"])
        assert "VPC a" in run(["list"]).stdout  # the data survived down/up
    finally:
        run(["down"])


def test_up_takes_a_count_of_workers(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VPCQ_REDIS_URL"}
    env.update(VPCQ_HOME=str(tmp_path / "h"))
    p = subprocess.run([sys.executable, "-m", "vpcq.cli.main", "up", "--workers", "-1"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2
    assert "invalid count value: '-1'" in one_line_error(p)
    assert not (tmp_path / "h").exists()  # refused before anything was started


def test_up_reports_a_worker_that_exits_while_starting(tmp_path):
    home = tmp_path / "h"
    env = {k: v for k, v in os.environ.items() if k != "VPCQ_REDIS_URL"}
    # a worker told to work in a namespace that does not exist stops at once, and says why
    env.update(VPCQ_HOME=str(home), VPCQ_NETNS="vqtest-no-such-ns")
    run = lambda args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "vpcq.cli.main", *args], capture_output=True, text=True,
        env=env, timeout=60)
    try:
        p = run(["up", "--workers", "1"])
        assert p.returncode == 3, p.stdout
        err = one_line_error(p)
        assert "worker-1 exited while starting: vpcq: error:" in err and "vqtest-no-such-ns" in err
        assert f"{home}/log/worker-1.out" in err
    finally:
        run(["down"])


def test_up_without_redis_server_names_the_package(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VPCQ_REDIS_URL"}
    env.update(VPCQ_HOME=str(tmp_path / "h"), PATH=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "vpcq.cli.main", "up"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 3
    assert "apt-get install redis-server" in one_line_error(p)
