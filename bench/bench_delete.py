"""Deleting against creating: `vpcq submit -f` of VPCS x 4 public subnets, then `vpcq cleanup`.

    sudo ./dev bench     (or: .venv/bin/python bench/bench_delete.py [VPCS] [ROUNDS])

Both are timed as a user waits for them: the `vpcq` process, from its start until it says
every command applied, with 2 workers started by `vpcq up` in a throwaway host namespace.
Before each phase the benchmark waits until the kernel is idle again: it destroys removed
namespaces in the background, and holds the rtnl lock while it does. Each round prints the
cost per subnet of each phase and their ratio (goal: deleting costs no more than creating).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import host_links, line, median, quiesce

from vpcq.testing.sandbox import build_internet, sweep
from vpcq.workers.kernel import netns

SUBNETS = 4
PREFIX = "bdv"  # the VPCs' names: their namespaces are bdv<i>-s<j> and vpcq_bdv<i>


def batch(vpcs: int) -> str:
    lines = []
    for i in range(vpcs):
        a, b = 10 + i // 64, (i % 64) * 4
        lines.append(f"create-vpc {PREFIX}{i} {a}.{b}.0.0/14")
        lines += [f"add-subnet {PREFIX}{i} s{j} {a}.{b + j}.0.0/24 --type public" for j in range(SUBNETS)]
    return "\n".join(lines) + "\n"


def ours() -> list[str]:
    return [x for x in netns.list_names() if x.startswith((PREFIX, f"vpcq_{PREFIX}"))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vpcs", nargs="?", type=int, default=250, help="VPCs x 4 subnets (default 250)")
    ap.add_argument("rounds", nargs="?", type=int, default=3, help="rounds (default 3)")
    args = ap.parse_args()
    vpcs, rounds = args.vpcs, args.rounds
    if os.geteuid() != 0:
        print("the benchmark needs root (network namespaces)", file=sys.stderr)
        return 3
    tok = "bd" + secrets.token_hex(2)
    home = Path(tempfile.mkdtemp(prefix="vpcq-bench-"))
    env = {**os.environ, "VPCQ_HOME": str(home), "VPCQ_NETNS": f"{tok}h", "VPCQ_UPLINK": "inet0",
           "VPCQ_DNS_UPSTREAM": "none"}  # never the machine's resolver
    env.pop("VPCQ_REDIS_URL", None)
    (home / "batch.txt").write_text(batch(vpcs))

    def vpcq(*args: str) -> float:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "vpcq.cli.main", *args], env=env, cwd="/",
                           capture_output=True, text=True, timeout=1800)
        took = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"vpcq {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        return took

    n = vpcs * SUBNETS
    print(f"== deleting against creating: {vpcs} VPCs x {SUBNETS} subnets ({n} subnets), "
          f"2 workers, {rounds} rounds")
    creates: list[float] = []
    deletes: list[float] = []
    if ours():
        print(f"refusing to run: namespaces {ours()[:3]} already exist", file=sys.stderr)
        return 3
    try:
        build_internet(tok)
        baseline = host_links(tok)
        vpcq("up", "--workers", "2")
        for r in range(rounds):
            quiesce(tok, baseline)
            creates.append(vpcq("submit", "-f", str(home / "batch.txt")) / n * 1000)
            quiesce(tok, baseline)
            deletes.append(vpcq("cleanup") / n * 1000)
            left = ours()
            if left:
                raise RuntimeError(f"cleanup left {len(left)} namespaces, e.g. {left[0]}")
            line(f"round {r + 1}: create / delete, ms per subnet",
                 f"{creates[-1]:.1f} / {deletes[-1]:.1f}", f"delete/create {deletes[-1] / creates[-1]:.2f}x")
        line("median: create / delete, ms per subnet", f"{median(creates):.1f} / {median(deletes):.1f}",
             f"delete/create {median(deletes) / median(creates):.2f}x (goal <= 1.0x)")
    finally:
        subprocess.run([sys.executable, "-m", "vpcq.cli.main", "down"], env=env, cwd="/",
                       capture_output=True, timeout=120)
        for x in ours():
            netns.remove(x)
        sweep(tok, home)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
