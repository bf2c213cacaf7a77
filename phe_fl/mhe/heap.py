"""How a node's process keeps OpenFHE's freed memory from piling up (glibc only; nothing
happens elsewhere).

OpenFHE's polynomials are many small allocations (a 2^15 tower is 256 kB, under glibc's
mmap threshold), so what it frees stays in the allocator's arenas, one per thread that
allocated: memory freed by a gRPC handler thread is not reused by the next step's thread,
and a key-generation round's transients (shares of 100-200 MB, decoded and re-encoded
several times) stay resident after the round. Measured over 4 node processes of the
784-64-64-10 network at 2^15: a node's resident memory after key generation fell from
1.9-2.0 GiB to 1.1-1.2 GiB with :func:`release_free_memory` after each key installation
(and a smaller share cache), and training's from 2.2-2.4 GiB to 2.0-2.1 GiB with two
arenas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

__all__ = ["limit_arenas", "release_free_memory"]

_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)
_libc: Any = None


def _glibc() -> Any:
    """glibc's handle, or None where the C library is another (no ``malloc_trim``)."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else False
        except OSError:
            _libc = False
    return _libc or None


def limit_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` heaps for all threads (glibc's default is 8 per core): called
    before a node starts its threads, so that what one step frees, the next reuses.
    Threads then share a heap's lock; a node's steps are few and large, and the time per
    training iteration did not change measurably."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, max(1, arenas))


def release_free_memory() -> None:
    """Give the heap's free pages back to the system. Worth it after one-off steps (a key
    installed, a key-generation round done, stored keys loaded): called every few seconds
    while training it cost more in page faults than it saved (iterations 10 % slower,
    peaks unchanged)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
