"""structlog setup: JSON lines to a file under $VPCQ_HOME, and to stderr with -v."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import structlog

from vpcq.proc import open_private


def configure(logfile: Path | None, verbose: bool = False, level: int = logging.INFO) -> None:
    """Route structlog and stdlib logging (arq's included) through one JSON formatter."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        # below the level, an event is dropped before any other processor runs
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handlers: list[logging.Handler] = []
    if logfile is not None:
        try:
            logfile.parent.mkdir(parents=True, exist_ok=True)
            # never through a symlink: root appends here
            fd = open_private(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            handlers.append(logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8")))
        except OSError:
            pass  # an unwritable home must not break a read-only command
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers or [logging.NullHandler()]
    root.setLevel(level)
