"""vpcq.proc's small-file read: what the whole-host checks read thousands of."""

from __future__ import annotations

import os

from vpcq.proc import read_bytes


def test_read_bytes_reads_a_file_up_to_its_limit_and_says_none_for_what_cannot_be_opened(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 200_000)
    assert read_bytes(f, 1 << 20) == b"x" * 200_000  # more than one read
    assert read_bytes(f, 10) == b"x" * 10
    assert read_bytes(tmp_path / "missing", 10) is None
    link = tmp_path / "link"
    link.symlink_to(f)
    assert read_bytes(link, 10) == b"x" * 10
    assert read_bytes(link, 10, os.O_NOFOLLOW) is None  # a file of vpcq's own: never a link
    assert read_bytes(tmp_path, 10) is None  # a directory: open works, read fails
    assert read_bytes(f"/proc/{os.getpid()}/cmdline", 1 << 20).split(b"\0")[0]  # a /proc file
