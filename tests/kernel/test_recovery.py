"""The log rebuilds the kernel: after a reboot, after drift, after a crash."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from tests.kernel.conftest import INTERNET_IP, Net, wait_until
from tests.kernel.scenarios import FIREWALL, two_vpcs
from vpcq.testing import probe
from vpcq.testing.sandbox import started_with
from vpcq.workers.kernel import netns

pytestmark = pytest.mark.kernel


def tutorial(net: Net) -> tuple[str, str]:
    return two_vpcs(
        net,
        {"kind": "apply-firewall", "vpc": "<a>", "subnet": "web", "firewall": FIREWALL},
        {"kind": "deploy-app", "vpc": "<b>", "subnet": "app"},
        {"kind": "peer-vpcs", "a": "<a>", "b": "<b>"},
        apps=("web", "db"),
    )


def checks(net: Net, a: str, b: str) -> None:
    assert "subnet web" in (probe.http(net.host, "10.0.1.1") or "")
    assert "subnet db" in (probe.http(f"{a}-web", "10.0.2.1") or "")
    assert probe.http(f"{a}-web", "10.1.1.1") is not None  # peered
    assert probe.ping(f"{a}-web", INTERNET_IP)
    assert not probe.ping(f"{a}-db", INTERNET_IP)
    assert not probe.tcp(net.host, "10.0.1.1", 22, timeout=0.5)


def reboot(net: Net) -> None:
    """What a reboot does to vpcq's kernel objects: every namespace, link, rule, app and
    resolver gone (files, /etc/netns's included, stay)."""
    net.stop_workers()
    pids = [json.loads(p.read_text())["pid"] for p in (net.home / "apps").glob("*.json")]
    for pid in pids + started_with(net.home / "dns"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for ns in netns.list_names():
        if net.tok in ns and ns not in (net.host, net.internet):
            netns.remove(ns)
    # the host loses its uplinks with the routers; it keeps its own config (inet0, routes)
    probe.save(net.host, "iptables", "-F")
    probe.save(net.host, "iptables", "-t", "nat", "-F")
    wait_until(lambda: "vq" not in probe.save(net.host, "ip", "-o", "link"))


def test_worker_start_after_a_reboot_restores_everything(net: Net):
    net.start_worker()
    a, b = tutorial(net)
    reboot(net)
    assert probe.http(net.host, "10.0.1.1") is None
    net.start_worker()  # like `vpcq up` after a reboot
    assert wait_until(lambda: probe.http(net.host, "10.0.1.1", timeout=0.5) is not None, 30)
    assert wait_until(lambda: net.vpcq("drift").returncode == 0, 30)
    checks(net, a, b)
    assert "DriftRepaired" in net.vpcq("log").stdout


def test_vpcq_repair_rebuilds_the_kernel_from_the_log(net: Net):
    net.start_worker()
    a, b = tutorial(net)
    reboot(net)
    assert net.vpcq("drift").returncode == 1
    p = net.vpcq("replay")  # what rebuilt it before `repair` had one name
    assert p.returncode == 2 and "`vpcq repair` rebuilds the kernel" in p.stderr
    p = net.vpcq("repair")
    assert p.returncode == 0, p.stderr
    assert net.vpcq("drift").returncode == 0
    checks(net, a, b)


def test_drift_names_each_difference_and_repair_undoes_it(worker: Net):
    a, b = tutorial(worker)
    router = f"vpcq_{a}"
    veth = next(ln.split(":")[1].strip().split("@")[0]
                for ln in probe.save(router, "ip", "-o", "link").splitlines() if " vs-" in ln)
    subprocess.run(["ip", "-n", router, "link", "del", veth], check=True)
    probe.save(f"{a}-web", "iptables", "-F")
    app = json.loads((worker.home / "apps" / f"{b}-app.json").read_text())["pid"]
    os.kill(app, signal.SIGKILL)
    subprocess.run(["ip", "-n", router, "addr", "add", "10.0.1.77/24", "dev",
                    next(ln.split(":")[1].strip() for ln in probe.save(
                        router, "ip", "-o", "link").splitlines() if " vb-" in ln)], check=True)
    p = worker.vpcq("drift")
    assert p.returncode == 1
    out = p.stdout
    assert f"create veth {veth}" in out
    assert f"update rules in {a}-web" in out
    assert f"create app 8000 in {b}-app" in out
    assert "delete addr" in out and "10.0.1.77" in out  # the foreign address on a vpcq bridge
    p = worker.vpcq("repair")
    assert p.returncode == 0, p.stderr
    assert worker.vpcq("drift").returncode == 0
    checks(worker, a, b)
    assert probe.http(worker.host, "10.1.1.1") is not None


def test_drift_and_repair_are_answered_by_a_running_worker(worker: Net):
    """With a worker of the host up, `vpcq drift` and `vpcq repair` are its answer (a warm
    process); `--here` runs them in a process of their own, and both say the same."""
    a, _b = tutorial(worker)
    router = f"vpcq_{a}"
    veth = next(ln.split(":")[1].strip().split("@")[0]
                for ln in probe.save(router, "ip", "-o", "link").splitlines() if " vs-" in ln)
    subprocess.run(["ip", "-n", router, "link", "del", veth], check=True)
    asked, here = worker.vpcq("drift"), worker.vpcq("drift", "--here")
    assert asked.returncode == here.returncode == 1, asked.stderr + here.stderr
    assert f"create veth {veth}" in asked.stdout and asked.stdout == here.stdout
    assert worker.vpcq("drift", "bad/name").returncode == 2  # refused by the worker, said here
    p = worker.vpcq("repair", "--json")
    assert p.returncode == 0, p.stderr
    steps = [json.loads(line) for line in p.stdout.splitlines()]
    assert any(s["op"] == "create" and f"veth {veth}" in s["object"] for s in steps), steps
    assert worker.vpcq("drift").returncode == 0
    logged = (worker.home / "log" / "w0.log").read_text()
    assert logged.count('"observed"') == 3, logged[-2000:]  # drift, repair, drift
    assert logged.count('"observe refused"') == 1  # the bad name
    checks(worker, a, _b)


def test_rollback_then_drift_at_its_target_agree(worker: Net):
    c = worker.client()
    v = worker.name("r")
    c.ok("create-vpc", name=v, cidr="10.3.0.0/16")
    c.ok("add-subnet", vpc=v, name="web", cidr="10.3.1.0/24", type="public")
    seq = c.state().seq
    c.ok("add-subnet", vpc=v, name="db", cidr="10.3.2.0/24")
    c.ok("deploy-app", vpc=v, subnet="db")
    c.ok("apply-firewall", vpc=v, subnet="web", firewall={"ingress": [], "default": "deny"})
    p = worker.vpcq("drift", "--at", str(seq))
    assert p.returncode == 1 and f"delete netns {v}-db" in p.stdout  # what a rollback will do
    p = worker.vpcq("rollback", v, "--to", str(seq))
    assert p.returncode == 0, p.stderr
    p = worker.vpcq("drift", "--at", str(seq))
    assert p.returncode == 0, p.stdout  # the kernel now is the state at seq
    assert not netns.exists(f"{v}-db")
    state = c.state()
    assert list(state.vpcs[v].subnets) == ["web"] and state.vpcs[v].subnets["web"].firewall is None
    assert "VpcRestored" in worker.vpcq("log", "--vpc", v).stdout


def batch(net: Net, n_vpcs: int) -> list[dict]:
    cmds = []
    for i in range(n_vpcs):
        v = net.name(f"k{i}")
        cmds.append({"kind": "create-vpc", "name": v, "cidr": f"10.{i}.0.0/16"})
        for j in range(3):
            cmds.append({"kind": "add-subnet", "vpc": v, "name": f"s{j}",
                         "cidr": f"10.{i}.{j}.0/24", "type": "public" if j == 0 else "private"})
    return cmds


def test_kill_9_a_worker_at_random_points_loses_and_duplicates_nothing(net: Net):
    rng = random.Random(7)
    c = net.client()
    for trial in range(10):
        cmds = batch(net, 20) if trial % 2 == 0 else [
            {"kind": "delete-vpc", "name": net.name(f"k{i}")} for i in range(20)]
        import asyncio

        from vpcq.events.commands import parse_command
        from vpcq.events.connection import connect
        from vpcq.events.jobs import JobQueue
        from vpcq.events.store import EventStore
        from vpcq.orchestrator.service import Orchestrator

        async def submit():
            r = await connect(net.redis_url)
            o = Orchestrator(r, EventStore(r), JobQueue(r), "crash@test")
            subs = await o.submit_batch([parse_command(x) for x in cmds])
            await r.aclose()
            return subs

        subs = asyncio.run(submit())
        net.start_worker(2, wait=False)
        time.sleep(rng.uniform(0.05, 1.5))
        for w in net.workers:
            w.send_signal(signal.SIGKILL)
        for w in net.workers:
            w.wait()
        net.workers.clear()
        net.start_worker(1)
        ids = {s.command_id for s in subs}

        def settled():
            return not ids & c.state().commands.keys()  # a finished command leaves the state

        assert wait_until(settled, 90, 0.2), f"trial {trial}: commands left pending"
        outcomes = [e.event.command_id for e in c.events()
                    if e.type in ("ChangeApplied", "ChangeFailed") and e.event.command_id in ids]
        assert sorted(outcomes) == sorted(ids), f"trial {trial}: an outcome missing or twice"
        assert not [e for e in c.events() if e.type == "ChangeFailed" and e.event.command_id in ids]
        p = net.vpcq("drift")
        assert p.returncode == 0, f"trial {trial}: {p.stdout}"
        net.stop_workers()
    leftovers = [n for n in netns.list_names() if net.tok in n and n not in (net.host, net.internet)]
    assert leftovers == []


def test_a_namespace_removal_cut_short_is_finished_by_the_next_change(worker: Net):
    """A worker killed between a namespace's umount and the unlink of its file leaves a
    plain file in /run/netns: not a namespace, so not seen as one, and never removed."""
    c = worker.client()
    v = worker.name("cut")
    assert c.submit({"kind": "create-vpc", "name": v, "cidr": "10.5.0.0/16"},
                    {"kind": "add-subnet", "vpc": v, "name": "web", "cidr": "10.5.1.0/24"}) == ["applied"] * 2
    assert netns.exists(f"{v}-web")
    assert netns._libc.umount2(netns.path(f"{v}-web").encode(), netns.MNT_DETACH) == 0
    assert netns.leftover(f"{v}-web") and f"{v}-web" in netns.list_names()
    assert c.submit({"kind": "delete-vpc", "name": v}) == ["applied"]
    assert [n for n in netns.list_names() if v in n] == []


def test_repair_waits_for_a_vpc_whose_lock_a_dead_worker_left(net: Net):
    """A worker killed in the middle of a change holds its VPC's lock until the lock lapses
    (seconds): `vpcq repair` waits for it instead of failing. (Typed by its old name,
    `reconcile`, which still works.)"""
    import redis

    net.start_worker()
    v = net.name("l")
    net.client().ok("create-vpc", name=v, cidr="10.6.0.0/16")
    net.stop_workers()
    r = redis.Redis.from_url(net.redis_url)
    try:
        # NX: a worker stopped with SIGTERM finishes its job and releases its lock
        assert r.set(f"vpcq:lock:{v}", "a dead worker", px=1500, nx=True)
        t0 = time.monotonic()
        p = net.vpcq("reconcile")
        assert p.returncode == 0, p.stderr
        assert "`reconcile` is called `repair` now" in p.stderr
        assert time.monotonic() - t0 >= 1.0  # it did wait
        assert net.vpcq("drift").returncode == 0
    finally:
        r.close()


def test_a_stopped_worker_finishes_the_change_it_is_applying(net: Net):
    """SIGTERM in the middle of a change: the worker takes no new job, finishes this one
    (its outcome is recorded, its VPC's lock released), then exits. Cancelled at once, it
    would leave a half-made VPC and its lock to lapse."""
    import threading

    import redis

    fault = net.home / "fault"
    fault.write_text("hold:step:2")
    net.start_worker(extra={"VPCQ_FAULT_FILE": str(fault)})
    (worker,) = net.workers
    v = net.name("t")
    results: list[list[str]] = []
    submit = threading.Thread(target=lambda: results.append(net.client().submit(
        {"kind": "create-vpc", "name": v, "cidr": "10.7.0.0/16"})))
    submit.start()
    try:
        logfile = net.home / "log" / "w0.log"
        assert wait_until(lambda: "holding at a step" in logfile.read_text(), 30)
        worker.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "allow_pick_jobs" in logfile.read_text(), 5)
        time.sleep(0.3)
        assert worker.poll() is None, "the worker quit in the middle of a change"
        fault.write_text("")  # let the step go on
        assert worker.wait(15) == 0
    finally:
        fault.write_text("")
        submit.join(30)
    assert results == [["applied"]]
    r = redis.Redis.from_url(net.redis_url)
    try:
        assert r.exists(f"vpcq:lock:{v}") == 0
    finally:
        r.close()
    assert netns.exists(net.client().state().vpcs[v].router_ns)
    assert net.vpcq("drift").returncode == 0


def test_a_vpc_made_again_by_another_worker_does_not_stall_the_one_that_deleted_it(net: Net):
    """A worker that removes a namespace waits, at its next change, for the far ends of
    its veths to go. If another worker has made the VPC again meanwhile, links of the same
    names exist again: they are not the ones it waits for."""
    net.start_worker(2)
    w0, w1 = net.workers
    c = net.client()
    v = net.name("m")
    make = [{"kind": "create-vpc", "name": v, "cidr": "10.8.0.0/16"},
            {"kind": "add-subnet", "vpc": v, "name": "web", "cidr": "10.8.1.0/24"}]
    w1.send_signal(signal.SIGSTOP)  # w0 makes and deletes it
    try:
        assert c.submit(*make) == ["applied"] * 2
        assert c.submit({"kind": "delete-vpc", "name": v}) == ["applied"]
    finally:
        w1.send_signal(signal.SIGCONT)
    w0.send_signal(signal.SIGSTOP)  # w1 makes it again
    try:
        assert c.submit(*make) == ["applied"] * 2
    finally:
        w0.send_signal(signal.SIGCONT)
    w1.send_signal(signal.SIGSTOP)  # w0's next change
    try:
        t0 = time.monotonic()
        assert c.submit({"kind": "create-vpc", "name": net.name("n"), "cidr": "10.9.0.0/16"}) == ["applied"]
        assert time.monotonic() - t0 < 3
    finally:
        w1.send_signal(signal.SIGCONT)
    applied = [ln for ln in (net.home / "log" / "w0.log").read_text().splitlines()
               if '"event": "applied"' in ln]
    assert len(applied) == 3 and f'"vpcs": ["{net.name("n")}"]' in applied[-1]  # w0's, all


def test_vpcq_up_returns_once_its_workers_take_jobs_and_down_stops_them(net: Net):
    try:
        p = net.vpcq("up", "--workers", "2")
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines[0].startswith("started the supervisor (pid ")
        assert [ln.split(" (")[0] for ln in lines[1:3]] == ["started worker-1", "started worker-2"]
        assert lines[-1] == "up: 2 worker(s) running"  # Redis is not its own here: VPCQ_REDIS_URL
        assert net.client().listening("default") == {"default": 2}  # at once, not in a moment
        a = net.name("a")
        assert net.vpcq("create-vpc", a, "10.0.0.0/16").returncode == 0
        assert net.vpcq("delete-vpc", a).returncode == 0
    finally:
        p = net.vpcq("down")
    assert p.stdout.strip() == "stopped supervisor, worker-1, worker-2", p.stdout
    assert net.client().listening("default") == {"default": 0}
