"""A serving node hands freed heap pages back: glibc keeps chunks freed below the top of
its heap resident, which is how OpenFHE's temporaries kept ~1 GB a node resident."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import pytest

from phe_fl.federation.node import release_freed_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_freed_heap_chunks_below_a_live_one_leave_resident_memory() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, n = 64 << 10, 3000  # under the mmap threshold: from the heap
    blocks = [libc.malloc(size) for _ in range(n)]
    for b in blocks:
        ctypes.memset(b, 1, size)
    pinned = libc.malloc(size)  # live above them: the heap's top cannot shrink
    ctypes.memset(pinned, 1, size)
    try:
        for b in blocks:
            libc.free(b)
        freed = _rss()
        release_freed_memory()
        assert freed - _rss() > n * size // 2
    finally:
        libc.free(pinned)
