"""A balancer's health check: a TCP connection from its router to a target, opened and closed."""

from __future__ import annotations

import asyncio
import os
import socket

from vpcq.workers.kernel import netns


async def tcp_check(ns: str, address: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection from namespace `ns` to address:port opens within `timeout`
    seconds, else why not. The socket is made by a thread that entered `ns` (a socket stays
    in the namespace it was made in) and connected on the event loop."""
    try:
        s = await netns.arun_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    except Exception as e:  # the router is gone, or being made again
        return str(e)
    s.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (address, port)), timeout)
        return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as e:  # asyncio's text names the address again; the reason is enough
        return os.strerror(e.errno) if e.errno else str(e)
    finally:
        s.close()
