"""`vpcq ui` and `vpcq graph`, the console's commands (docs/architecture.md, "The console").

The console is imported only here and only when one of them runs, so `vpcq --help` and every
other command never load Starlette or uvicorn (an import-linter contract and a test check it).
"""

from __future__ import annotations

import argparse
import sys

from vpcq import config
from vpcq.errors import DomainError
from vpcq.events.connection import connect


async def ui(ns: argparse.Namespace) -> int:
    from vpcq.console.web import serve

    return await serve(ns.listen)


async def graph(ns: argparse.Namespace) -> int:
    from vpcq.console.archive import Archive
    from vpcq.console.export import render
    from vpcq.console.layout import draw
    from vpcq.console.model import NO_FACTS, topology

    redis = await connect(config.redis_url())
    try:
        archive = Archive(redis)
        scene = await archive.load(upto=ns.at_seq)
        if ns.at_seq is not None and ns.at_seq > scene.seq:
            raise DomainError("at", f"{ns.at_seq} is beyond the end of the log ({scene.seq})")
        facts = NO_FACTS if ns.at_seq is not None else await archive.facts(scene)
    finally:
        await redis.aclose()
    text = render(ns.format, draw(topology(scene, facts)))
    if ns.output:
        with open(ns.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
