"""The files a user hands the CLI (rules, batches): bounded, never waited on, UTF-8 or refused."""

from __future__ import annotations

import os
import stat
import sys

from vpcq.errors import DomainError

MAX_BYTES = 1 << 20  # a rules or batch file: 256 rules are a few tens of KiB


def read_text(path: str) -> str:
    """A file's text, or `-` for stdin; one DomainError line for anything else: a FIFO or a
    device (which would block or never end), a file over MAX_BYTES, bytes that are not UTF-8."""
    if path == "-":
        return _decode("stdin", sys.stdin.buffer.read(MAX_BYTES + 1))
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait for one
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise DomainError("file", f"cannot read {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" \
                if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            raise DomainError("file", f"{path} is {what}, not a regular file")
        if st.st_size > MAX_BYTES:
            raise DomainError("file", f"{path} is {st.st_size:,} bytes, over the limit of "
                                      f"{MAX_BYTES:,}")
        data = _read(fd, path)
    finally:
        os.close(fd)
    return _decode(path, data)


def _read(fd: int, path: str) -> bytes:
    chunks, n = [], 0
    while n <= MAX_BYTES:  # bounded even if the file grows while it is read
        try:
            chunk = os.read(fd, MAX_BYTES + 1 - n)
        except OSError as e:
            raise DomainError("file", f"cannot read {path}: {e.strerror}") from None
        if not chunk:
            break
        chunks.append(chunk)
        n += len(chunk)
    return b"".join(chunks)


def _decode(path: str, data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise DomainError("file", f"{path} is over the limit of {MAX_BYTES:,} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise DomainError("file", f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                                  f"offset {e.start})") from None
