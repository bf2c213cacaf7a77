"""A node's process hands freed heap memory back (phe_fl.mhe.heap): what a key
installation or a key-generation round frees below live allocations stays resident until
it is released."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from phe_fl.mhe import limit_arenas, release_free_memory
from phe_fl.mhe.heap import _glibc


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc_trim only")
def test_memory_freed_below_a_live_block_is_given_back() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 << 10, 3200  # 200 MB of blocks under the mmap threshold: the heap
    blocks = [libc.malloc(size) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, size)  # resident
    for b in blocks[:-1]:  # the last block stays: the freed space is not the heap's top
        libc.free(b)
    held = _rss()
    release_free_memory()
    given_back = held - _rss()
    libc.free(blocks[-1])
    assert given_back > 150 << 20, f"only {given_back >> 20} MiB of 200 given back"


def test_both_are_harmless_to_call_again() -> None:
    limit_arenas()
    limit_arenas()
    release_free_memory()
    release_free_memory()
