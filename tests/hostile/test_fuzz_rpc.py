"""Structure-aware fuzzing of every RPC of real node processes.

A LocalCluster of three node processes (insecure-test-n12; node-0 the root, node-1 and
node-2 its leaves) with its keys generated once and a model trained once is attacked:

* ``Root.Submit`` as the authenticated querier: a valid JobRequest of every job kind,
  then mutated -- random bytes, truncations, bit flips of the serialized protobuf, the
  bytes of another message type, scalar fields set to edge values, another job kind in
  the oneof, repeated fields emptied or multiplied, and the embedded envelopes (querier
  key, encrypted queries) flipped, truncated or relabelled with and without their
  XXH3-128 checksum recomputed; and at the framing level: huge or inconsistent declared
  sizes, overruns, short streams, extra frames, no frames, random and too many call ids.
* ``Tree.Connect`` as a child: node-2 is stopped and the test dials node-0 with node-2's
  certificate: mutated Hellos, then a valid Hello followed by mutated TreeResponses to
  the root's real requests (ping, statistics, key switch, statistics release, training
  preparation, gradient), which the root gets from querier jobs run meanwhile; and many
  Connect streams that never finish their Hello.
* ``Tree.Connect`` as a parent: a fresh leaf process (node-2's certificate and data, a
  new state dir) dials a gRPC server of the test holding node-0's certificate, which
  walks it through a whole key generation made in the test process (so that every step
  kind is allowed once) and sends it mutated TreeRequests of every step kind.

Each input ends as a clean error (a gRPC status or a typed Failure naming the problem), a
success, a wrong status (one that does not name the problem: an unexpected exception on
the node, or a status too large for the peer to receive), a crash (a node process
exited) or a hang (no answer within HANG_S seconds). After each phase the nodes must still serve
(status jobs, pooled statistics); the node processes' resident memory is measured from
after the warm-up to the end.

This module holds the fuzzer; the test runs one round (about a minute on two cores);
``benchmarks/bench_hostile.py`` imports it and runs ten. The seed is printed
(PHE_FL_FUZZ_SEED replays a run's choices; the ciphertexts are fresh each run).
"""

from __future__ import annotations

import json
import os
import platform
import queue
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from phe_fl.errors import PheFlError
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import encrypt_chunks, masked
from phe_fl.federation import messages as m
from phe_fl.federation import serde
from phe_fl.federation.certs import load_server_credentials
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.federation.serde import CHUNK, Frame, FrameReader
from phe_fl.federation.tree import open_channel
from phe_fl.mhe import (
    INSECURE_TEST,
    Context,
    JointPublicKey,
    Party,
    PublicKeyGen,
    QuerierPublicKey,
    Refresh,
    RelinKeyGen,
    RotationKeyGen,
)
from phe_fl.mhe._wire import Envelope, Kind
from phe_fl.ml import MLPJob, TrainingJob
from phe_fl.ml.glm.prediction import encrypt_queries
from phe_fl.v2 import common_pb2, ml_pb2, query_pb2, query_pb2_grpc, tree_pb2, tree_pb2_grpc
from tests.helpers import body_of, reseal

ROOT = Path(__file__).resolve().parents[2]
PARAMS = INSECURE_TEST.name
N_NODES = 3
N_FEATURES = 30
SAMPLES = 569  # breast_cancer rows: what pooled statistics must count
DEFAULT_SEED = 20261204
SEED_ENV = "PHE_FL_FUZZ_SEED"

HANG_S = 8.0
"""An input must be answered (a reply, a status, a typed Failure or a dropped link) within
this; nothing in that time is a hang."""
JOB_S = 8.0
"""A job that is still making progress after this is cancelled (slow, not hung)."""
RECONNECT_S = 15.0
"""A leaf whose link dropped must dial in again within this (its backoff is at most 5 s)."""
ROOT_DEADLINE_S = 10.0
"""The root's deadline for one round over the tree (what a job waits for a child)."""
MAX_RSS_GROWTH_MB = 400.0
"""Allowed growth of one node process's resident memory over a run. Bounded caches fill
up during a run: a party keeps its last 256 shares and partial decryptions (Party's
cache, about 170 MB at insecure-test-n12, reached after ~130 key switches) and a node
its last 32 answers; the root also keeps what each failed job references (about 0.5 MB
per failed stats job here, see tests/hostile/README.md), which a long run adds on top."""

CLEAN, OK, WRONG, CRASH, HANG = "error", "ok", "wrong-status", "crash", "hang"
COLUMNS = (CLEAN, OK, WRONG, CRASH, HANG)

JOB_KINDS = (
    "setup",
    "stats",
    "train",
    "model_weights",
    "model_info",
    "predict",
    "joint_key",
    "status",
    "watch",
    "list_jobs",
    "cancel",
    "list_models",
)
ONE_SHOT = ("public_key", "install_joint_key", "relin_round_one", "relin_round_two")
ONE_SHOT += ("install_relin_key",)
"""Key-generation steps a node does once: a mutated request it accepts moves its state on,
and every later one is refused by the state machine before its payload is read; these
get payload mutations only."""
KEYGEN_STEPS = (
    "public_key",
    "install_joint_key",
    "relin_round_one",
    "relin_round_two",
    "install_relin_key",
    "rotation_keys",
    "install_rotation_keys",
)
READY_STEPS = (
    "statistics",
    "decrypt_statistics",
    "decrypt_model",
    "key_switch",
    "refresh",
    "prepare_training",
    "gradient",
    "margin_moment",
    "prepare_network",
    "network_map",
    # this leaf declares no FedAvg app: PREPARE is refused naming it, the others by the
    # FedAvg machine; what is fuzzed is that every message decodes safely first
    "fedavg_prepare",
    "fedavg_global",
    "fedavg_train",
    "fedavg_update",
    "fedavg_decrypt",
)
CHILD_TARGETS = (
    ("ping", "status"),
    ("statistics", "stats"),
    ("key_switch", "stats"),
    ("decrypt_statistics", "train-std"),
    ("prepare_training", "train"),
    ("gradient", "train"),
)

# -- mutations ----------------------------------------------------------------------------------
MESSAGE_MUTATIONS = ("field-extreme", "oneof-swap", "bytes-field", "repeated")
WIRE_MUTATIONS = ("random-bytes", "truncate", "bitflip", "wrong-type", "empty-message")
FRAME_MUTATIONS = (
    "frames-split",
    "frames-huge-size",
    "frames-inconsistent",
    "frames-overrun",
    "frames-short",
    "frames-extra",
    "frames-none",
    "frames-random-call-id",
    "frames-too-many-open",
    "frames-interleaved",
)
ENVELOPE_MUTATIONS = (
    "flip",
    "flip-header",
    "flip-blob",
    "flip-blob",
    "word-max",
    "truncate-blob",
    "random-blob",
    "relabel",
    "wrong-kind",
    "empty",
    "garbage",
)
ACCEPTABLE = ("relabel", "flip-header", "flip-blob")
"""Envelope mutations a node may accept (another object of the same OpenFHE type, a flipped
subject byte, a flipped coefficient): a one-shot step gets them last, and an install step
not at all (the keys it installs must stay those of the simulated key generation, or
every later step fails on mismatched keys instead of reading its own payload)."""
ONE_SHOT_ENVELOPES = tuple(e for e in ENVELOPE_MUTATIONS if e not in ACCEPTABLE)
ONE_SHOT_ENVELOPES += ("flip-blob-head",)
SUBMIT_MUTATIONS = (
    ("valid", "detach", "bytes-field", "bytes-field")
    + MESSAGE_MUTATIONS
    + WIRE_MUTATIONS
    + FRAME_MUTATIONS
)
HELLO_MUTATIONS = ("valid", "field-extreme", "field-extreme", "oneof-swap") + (
    WIRE_MUTATIONS + FRAME_MUTATIONS
)
ANSWER_MUTATIONS = (
    "payload",
    "payload",
    "payload",
    "payload",
    "payload",
    "field-extreme",
    "wrong-result",
    "failure",
    "empty-response",
    "second-hello",
    "wrong-call-id",
    "stats-flood",
) + WIRE_MUTATIONS
PARENT_MUTATIONS = ("payload", "payload", "bytes-field", "field-extreme", "oneof-swap", "repeated")
PARENT_FRAME_MUTATIONS = ("frames-split", "frames-random-call-id", "frames-interleaved")

# inputs per round (the test runs one round, the benchmark ten)
SUBMIT_PER_KIND = len(SUBMIT_MUTATIONS)
HELLO_INPUTS = len(HELLO_MUTATIONS)
SUBMIT_ENVELOPES = 8
"""Extra envelope mutations per round for the job kinds that carry envelopes (stats,
predict): their querier key and encrypted queries are what reaches OpenFHE."""
ANSWERS_PER_STEP = 5
PARENT_PER_STEP = 8
PARENT_BREAKING = 4
"""Parent-side inputs that make the leaf drop its link, per round: each costs the leaf's
reconnect backoff (0.2 s to 5 s), so they are budgeted apart from the others."""
STALLED_STREAMS = 32
"""Connect streams held open without finishing their Hello (the root has 24 workers)."""

JUNK_CALLS = 1 << 62
"""Call ids of unfinished junk messages start here, far from the ids a stream uses."""
STRINGS = (
    "",
    "x" * 70_000,
    "ünïcødé ✓",
    "a\x00b",
    "../../../etc/passwd",
    "node-0",
    "node-1",
    "querier",
    "n14-depth5-128",
    "%s%n{0}",
)
DOUBLES = (0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, -1.0)
EXTREMES: dict[int, tuple[Any, ...]] = {
    FieldDescriptor.CPPTYPE_UINT32: (0, 1, 2**31, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 1, 2**63, 2**64 - 1),
    FieldDescriptor.CPPTYPE_INT32: (0, -1, 2**31 - 1, -(2**31)),
    FieldDescriptor.CPPTYPE_INT64: (0, -1, 2**63 - 1, -(2**63)),
    FieldDescriptor.CPPTYPE_DOUBLE: DOUBLES,
    FieldDescriptor.CPPTYPE_FLOAT: DOUBLES,
    FieldDescriptor.CPPTYPE_BOOL: (True, False),
    FieldDescriptor.CPPTYPE_ENUM: (0, 1, 2, 3, 99, -7),
    FieldDescriptor.CPPTYPE_STRING: STRINGS,
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} chars)"


@dataclass
class Input:
    """One crafted stream: its frames, what it is, and what a correct peer does with it."""

    frames: list[Frame]
    desc: str
    call_id: int = 0
    incomplete: bool = False  # no message completes: only the end of the stream answers it
    message: bytes = b""  # the message the frames carry (when they carry one whole)


def _chunks(data: bytes, call_id: int, total: int | None = None) -> list[Frame]:
    size = len(data) if total is None else total
    out = [
        Frame(call_id=call_id, total_size=size, data=data[off : off + CHUNK])
        for off in range(0, len(data), CHUNK)
    ]
    return out or [Frame(call_id=call_id, total_size=size, data=b"")]


def _walk(
    msg: Message, skip: Sequence[str] = (), path: str = ""
) -> Iterator[tuple[Message, FieldDescriptor, str]]:
    """Every field of ``msg`` and of its submessages (only the chosen member of a oneof;
    repeated submessages: the elements present)."""
    for fd in msg.DESCRIPTOR.fields:
        oneof = fd.containing_oneof
        if oneof is not None and msg.WhichOneof(oneof.name) != fd.name:
            continue
        here = f"{path}{fd.name}"
        if f"{msg.DESCRIPTOR.name}.{fd.name}" in skip:
            continue
        yield msg, fd, here
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if fd.is_repeated:
            for i, item in enumerate(getattr(msg, fd.name)):
                yield from _walk(item, skip, f"{here}[{i}].")
        else:
            yield from _walk(getattr(msg, fd.name), skip, f"{here}.")


def _present_messages(msg: Message, path: str = "") -> Iterator[tuple[Message, str]]:
    yield msg, path
    for fd in msg.DESCRIPTOR.fields:
        if fd.type != FieldDescriptor.TYPE_MESSAGE or fd.is_repeated:
            continue
        if msg.HasField(fd.name):
            yield from _present_messages(getattr(msg, fd.name), f"{path}{fd.name}.")


class Mutator:
    """Every mutation, driven by one seeded RNG. ``pool``: valid envelopes of several kinds
    (what a relabelled or wrong-kind payload is made of)."""

    def __init__(self, rng: random.Random, pool: dict[Kind, bytes]) -> None:
        self.rng = rng
        self.pool = pool

    def schedule(self, names: Sequence[str], count: int) -> list[str]:
        """``count`` mutation names: the whole list in a shuffled order, again and again."""
        out: list[str] = []
        while len(out) < count:
            batch = list(names)
            self.rng.shuffle(batch)
            out.extend(batch)
        return out[:count]

    # -- bytes ------------------------------------------------------------------------------
    def flip(self, data: bytes, n: int, lo: int = 0, hi: int | None = None) -> tuple[bytes, str]:
        hi = len(data) if hi is None else min(hi, len(data))
        if hi <= lo:
            return data + b"\x01", "appended a byte"
        buf = bytearray(data)
        where = []
        for _ in range(n):
            pos, bit = self.rng.randrange(lo, hi), self.rng.randrange(8)
            buf[pos] ^= 1 << bit
            where.append(f"{pos}.{bit}")
        return bytes(buf), f"bits {','.join(where)}"

    def wire(self, name: str, data: bytes, wrong: Sequence[bytes]) -> tuple[bytes, str]:
        rng = self.rng
        if name == "random-bytes":
            size = rng.choice((1, 2, 7, 64, 512, 4096))
            return rng.randbytes(size), f"{size} random bytes"
        if name == "truncate":
            cut = rng.randrange(len(data)) if data else 0
            return data[:cut], f"cut at {cut} of {len(data)}"
        if name == "bitflip":
            n = rng.choice((1, 2, 4, 8))
            hi = 64 if rng.random() < 0.5 else None
            out, where = self.flip(data, n, 0, hi)
            return out, where
        if name == "wrong-type":
            i = rng.randrange(len(wrong))
            return wrong[i], f"wrong message type #{i}"
        assert name == "empty-message"
        return b"", "empty message"

    # -- envelopes --------------------------------------------------------------------------
    def envelope(self, data: bytes, name: str | None = None) -> tuple[bytes, str]:
        """A mutated phe-fl envelope (or mutated bytes, when ``data`` is not one)."""
        rng = self.rng
        name = name or rng.choice(ENVELOPE_MUTATIONS)
        try:
            env = Envelope.unpack(data, Kind(data[5]))
        except Exception:  # noqa: BLE001 - not an envelope: plain bytes
            out, where = self.flip(data, 2)
            return out, f"bytes flipped {where}"
        mask = (env.n_parties + 7) // 8
        head = 16 + mask + 32 + 1  # _HEAD, party mask, subject, blob count
        blob0 = head + 4
        body = body_of(data)
        others = [k for k in self.pool if k != env.kind]
        if name == "flip":
            out, where = self.flip(data, rng.randint(1, 3))
            return out, f"flip {where} (checksum kept)"
        if name == "flip-header":
            out, where = self.flip(body, 1, 4, blob0)
            return reseal(out), f"flip-header {where}, resealed"
        if name in ("flip-blob", "flip-blob-head"):
            head_only = name == "flip-blob-head" or rng.random() < 0.5
            hi = blob0 + 1024 if head_only else None
            out, where = self.flip(body, rng.randint(1, 4), blob0, hi)
            return reseal(out), f"flip-blob {where}, resealed"
        if name == "word-max":
            blob = env.blobs[0]
            pos = rng.randrange(0, max(len(blob) - 8, 1)) & ~7
            blob = blob[:pos] + b"\xff" * 8 + blob[pos + 8 :]
            return replace(env, blobs=(blob, *env.blobs[1:])).pack(), f"word-max at {pos}"
        if name == "truncate-blob":
            i = rng.randrange(len(env.blobs))
            blob = env.blobs[i]
            a = rng.randrange(len(blob)) if blob else 0
            if rng.random() < 0.5:
                cut, what = blob[:a], f"blob {i} cut at {a} of {len(blob)}"
            else:
                b = min(len(blob), a + rng.randint(1, 64))
                cut, what = blob[:a] + blob[b:], f"blob {i} hole {a}:{b}"
            blobs = (*env.blobs[:i], cut, *env.blobs[i + 1 :])
            return replace(env, blobs=blobs).pack(), f"{what}, resealed"
        if name == "random-blob":
            i = rng.randrange(len(env.blobs))
            blobs = (*env.blobs[:i], rng.randbytes(len(env.blobs[i])), *env.blobs[i + 1 :])
            return replace(env, blobs=blobs).pack(), f"blob {i} random, resealed"
        if name == "relabel" and others:
            kind = rng.choice(others)
            alien = Envelope.unpack(self.pool[kind], kind).blobs[0]
            blobs = (alien, *env.blobs[1:])
            return replace(env, blobs=blobs).pack(), f"blob of a {kind.name} inside, resealed"
        if name == "wrong-kind" and others:
            kind = rng.choice(others)
            return self.pool[kind], f"a {kind.name} instead"
        if name == "empty":
            return b"", "empty"
        size = rng.randint(1, 300)
        return b"PHFL" + rng.randbytes(size), f"magic + {size} random bytes"

    # -- protobuf structure -----------------------------------------------------------------
    def field_extreme(self, msg: Message, skip: Sequence[str] = ()) -> str | None:
        fields = [f for f in _walk(msg, skip) if f[1].type != FieldDescriptor.TYPE_MESSAGE]
        if not fields:
            return None
        owner, fd, path = self.rng.choice(fields)
        if fd.type == FieldDescriptor.TYPE_BYTES:
            value: Any = self.rng.choice((b"", self.rng.randbytes(64)))
        else:
            value = self.rng.choice(EXTREMES[fd.cpp_type])
        if fd.is_repeated:
            items = getattr(owner, fd.name)
            del items[:]
            items.extend([value] * self.rng.choice((1, 3)))
        else:
            setattr(owner, fd.name, value)
        return f"{path}={_short(value)}"

    def oneof_swap(self, msg: Message, skip: Sequence[str] = ()) -> str | None:
        groups = [
            (owner, oneof, path)
            for owner, path in _present_messages(msg)
            for oneof in owner.DESCRIPTOR.oneofs
            if f"{owner.DESCRIPTOR.name}.{oneof.name}" not in skip
        ]
        if not groups:
            return None
        owner, oneof, path = self.rng.choice(groups)
        current = owner.WhichOneof(oneof.name)
        fd = self.rng.choice([f for f in oneof.fields if f.name != current])
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(owner, fd.name).SetInParent()
        else:
            setattr(owner, fd.name, self.rng.choice(EXTREMES[fd.cpp_type]))
        return f"{path}{oneof.name}: {current} -> {fd.name}"

    def bytes_field(
        self, msg: Message, skip: Sequence[str] = (), envelope: str | None = None
    ) -> str | None:
        found: list[tuple[Message, FieldDescriptor, int | None, str]] = []
        for owner, fd, path in _walk(msg, skip):
            if fd.type != FieldDescriptor.TYPE_BYTES:
                continue
            if fd.is_repeated:
                items = getattr(owner, fd.name)
                found += [(owner, fd, i, f"{path}[{i}]") for i in range(len(items)) if items[i]]
            elif getattr(owner, fd.name):
                found.append((owner, fd, None, path))
        if not found:
            return None
        owner, fd, index, path = self.rng.choice(found)
        if index is None:
            new, what = self.envelope(getattr(owner, fd.name), envelope)
            setattr(owner, fd.name, new)
        else:
            items = getattr(owner, fd.name)
            new, what = self.envelope(items[index], envelope)
            items[index] = new
        return f"{path}: {what}"

    def repeated(self, msg: Message, skip: Sequence[str] = ()) -> str | None:
        fields = [f for f in _walk(msg, skip) if f[1].is_repeated]
        if not fields:
            return None
        owner, fd, path = self.rng.choice(fields)
        items = getattr(owner, fd.name)
        choice = self.rng.randrange(3)
        if choice == 0 or (choice == 1 and not len(items)):
            del items[:]
            return f"{path} emptied"
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            for _ in range(3):
                items.add()
            return f"{path} + 3 empty entries"
        if choice == 1:
            first = items[0]
            n = self.rng.choice((2, 4))
            items.extend([first] * n)
            return f"{path} first entry repeated {n} more times"
        if fd.type == FieldDescriptor.TYPE_BYTES:
            items.extend([self.rng.randbytes(32) for _ in range(3)])
            return f"{path} + 3 random entries"
        values = [self.rng.choice(EXTREMES[fd.cpp_type]) for _ in range(64)]
        items.extend(values)
        return f"{path} + 64 edge values"

    # -- frames -----------------------------------------------------------------------------
    def frames(self, name: str, data: bytes, call_id: int) -> Input:
        rng = self.rng
        if name == "frames-split":
            k = rng.randint(2, 40)
            cuts = sorted({rng.randrange(1, len(data)) for _ in range(k)}) if len(data) > 1 else []
            bounds = [0, *cuts, len(data)]
            frames = []
            for a, b in zip(bounds, bounds[1:], strict=False):
                for off in range(a, b, CHUNK):
                    piece = data[off : min(b, off + CHUNK)]
                    frames.append(Frame(call_id=call_id, total_size=len(data), data=piece))
            frames = frames or _chunks(data, call_id)
            return Input(frames, f"{len(frames)} frames", call_id, message=data)
        if name == "frames-huge-size":
            size = rng.choice((2**31 + 1, 2**40, 2**64 - 1))
            frames = [Frame(call_id=call_id, total_size=size, data=data[:CHUNK])]
            return Input(frames, f"declares {size} bytes", call_id)
        if name == "frames-inconsistent":
            half = min(len(data) // 2, CHUNK)
            frames = [
                Frame(call_id=call_id, total_size=len(data) + 5, data=data[:half]),
                Frame(call_id=call_id, total_size=len(data) + 6, data=data[half : half + CHUNK]),
            ]
            return Input(frames, "sizes differ between frames", call_id)
        if name == "frames-overrun":
            size = max(0, len(data) - rng.randint(1, 100))
            frames = _chunks(data or b"x", call_id, size)  # the last frame goes past it
            return Input(frames, f"{len(data)} bytes for a declared {size}", call_id)
        if name == "frames-short":
            extra = rng.randint(1, 1000)
            frames = _chunks(data, call_id, len(data) + extra)
            return Input(frames, f"{extra} bytes short", call_id, incomplete=True)
        if name == "frames-extra":
            frames = _chunks(data, call_id)
            for _ in range(rng.randint(1, 3)):
                junk = rng.randbytes(rng.randint(1, 100))
                frames.append(Frame(call_id=rng.getrandbits(64), total_size=len(junk), data=junk))
            return Input(frames, "junk messages after it", call_id)
        if name == "frames-none":
            return Input([], "no frames", call_id, incomplete=True)
        if name == "frames-random-call-id":
            call = rng.getrandbits(64)
            return Input(_chunks(data, call), f"call id {call}", call, message=data)
        if name == "frames-too-many-open":
            frames = [Frame(call_id=JUNK_CALLS + c, total_size=2, data=b"x") for c in range(65)]
            return Input(frames + _chunks(data, call_id), "65 messages open", call_id)
        assert name == "frames-interleaved"
        other = JUNK_CALLS + rng.getrandbits(40)
        junk = rng.randbytes(50)
        frames = [Frame(call_id=other, total_size=len(junk) + 10, data=junk)]
        frames += _chunks(data, call_id)
        return Input(frames, f"an unfinished message (call {other}) first", call_id, message=data)

    def message_input(
        self,
        name: str,
        msg: Message,
        *,
        call_id: int = 0,
        wrong: Sequence[bytes] = (),
        skip: Sequence[str] = (),
    ) -> Input:
        """``msg`` mutated by ``name`` (a message, wire or frame mutation, or "valid")."""
        if name in MESSAGE_MUTATIONS:
            work = type(msg)()
            work.CopyFrom(msg)
            how = {
                "field-extreme": self.field_extreme,
                "oneof-swap": self.oneof_swap,
                "bytes-field": self.bytes_field,
                "repeated": self.repeated,
            }
            what = how[name](work, skip)
            if what is None:  # nothing of that shape in this message
                name, what = "field-extreme", self.field_extreme(work, skip)
            data = work.SerializeToString()
            return Input(_chunks(data, call_id), f"{name}: {what}", call_id, message=data)
        data = msg.SerializeToString()
        if name in WIRE_MUTATIONS:
            data, what = self.wire(name, data, wrong)
            return Input(_chunks(data, call_id), f"{name}: {what}", call_id, message=data)
        if name in FRAME_MUTATIONS:
            got = self.frames(name, data, call_id)
            got.desc = f"{name}: {got.desc}"
            return got
        assert name == "valid", name
        return Input(_chunks(data, call_id), "valid", call_id, message=data)


# -- bookkeeping --------------------------------------------------------------------------------
@dataclass
class Tally:
    """What happened to every input, by target (RPC and job kind or step)."""

    seed: int
    rounds: int
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    details: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    notable: list[dict[str, Any]] = field(default_factory=list)
    records: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    serving: dict[str, str] = field(default_factory=dict)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    timeline: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(
        self, target: str, desc: str, kind: str, detail: str, seconds: float, log: str = ""
    ) -> None:
        self.counts[target][kind] += 1
        shape = re.sub(r"[0-9a-f]{8,}|\d+", "N", detail[:100])  # one key per kind of answer
        self.details[target][f"{kind}: {shape}"] += 1
        self.seconds[target] += seconds
        self.records.append((target, desc[:200], kind, detail[:200], round(seconds, 3)))
        if kind in (WRONG, CRASH, HANG):
            self.notable.append(
                {
                    "target": target,
                    "input": desc[:400],
                    "outcome": kind,
                    "detail": detail[:1000],
                    "seconds": round(seconds, 3),
                    "log": log[-4000:],
                }
            )

    def total(self, kind: str) -> int:
        return sum(c[kind] for c in self.counts.values())

    @property
    def inputs(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def still_serving(self) -> bool:
        return bool(self.serving) and all(v.startswith("yes") for v in self.serving.values())

    @property
    def max_growth_mb(self) -> float:
        return max((v["growth_mb"] for v in self.memory.values()), default=0.0)

    def table(self) -> str:
        head = f"{'target':<44}{'inputs':>7}{'errors':>8}{'ok':>6}{'wrong':>7}"
        head += f"{'crashes':>8}{'hangs':>7}{'seconds':>9}"
        lines = [head, "-" * len(head)]
        for target in sorted(self.counts, key=_target_order):
            c = self.counts[target]
            lines.append(
                f"{target:<44}{sum(c.values()):>7}{c[CLEAN]:>8}{c[OK]:>6}{c[WRONG]:>7}"
                f"{c[CRASH]:>8}{c[HANG]:>7}{self.seconds[target]:>9.1f}"
            )
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<44}{self.inputs:>7}{self.total(CLEAN):>8}{self.total(OK):>6}"
            f"{self.total(WRONG):>7}{self.total(CRASH):>8}{self.total(HANG):>7}"
            f"{sum(self.seconds.values()):>9.1f}"
        )
        lines.append("")
        lines.append("still serving:")
        lines += [f"  {k}: {v}" for k, v in self.serving.items()]
        lines.append(f"memory (VmRSS, MB; bound +{MAX_RSS_GROWTH_MB:.0f} per process):")
        for name, v in self.memory.items():
            lines.append(
                f"  {name:<10} {v['start_mb']:8.1f} -> {v['end_mb']:8.1f}  "
                f"({v['growth_mb']:+.1f})  {v.get('span', '')}"
            )
        for when, rss in self.timeline.items():
            sizes = ", ".join(f"{k} {v:.0f}" for k, v in rss.items())
            lines.append(f"  after {when}: {sizes}")
        lines.append("phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items()))
        for note in self.notes:
            lines.append(f"note: {note}")
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for n in self.notable:  # one line per kind of finding, with its first input
            detail = re.sub(r"\d+", "N", n["detail"][:160])
            groups[(n["outcome"], n["target"].split("/")[0], detail)].append(n)
        for (outcome, _, _), found in groups.items():
            first = found[0]
            times = f" (x{len(found)}, e.g.)" if len(found) > 1 else ""
            lines.append(
                f"{outcome.upper()}{times} {first['target']}: {first['input'][:160]}\n"
                f"    -> {first['detail'][:300]}"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rounds": self.rounds,
            "totals": {k: self.total(k) for k in COLUMNS} | {"inputs": self.inputs},
            "targets": {
                t: {
                    "inputs": sum(c.values()),
                    **{k: c[k] for k in COLUMNS},
                    "seconds": round(self.seconds[t], 1),
                }
                for t, c in sorted(self.counts.items(), key=lambda kv: _target_order(kv[0]))
            },
            "details": {t: dict(c.most_common()) for t, c in self.details.items()},
            "notable": self.notable,
            "records": [
                dict(zip(("target", "input", "outcome", "detail", "seconds"), r, strict=True))
                for r in self.records
            ],
            "still_serving": self.serving,
            "memory_mb": self.memory,
            "phases_s": {k: round(v, 1) for k, v in self.phases.items()},
            "rss_mb_after": self.timeline,
            "notes": self.notes,
        }


def _target_order(target: str) -> tuple[int, int, str]:
    rpc, _, what = target.partition("/")
    order = (*JOB_KINDS, "hello", "stalled-hellos", "ping", *KEYGEN_STEPS, *READY_STEPS)
    rpcs = ("Root.Submit", "Tree.Connect(child)", "Tree.Connect(parent)")
    return (
        rpcs.index(rpc) if rpc in rpcs else 9,
        order.index(what) if what in order else 99,
        what,
    )


def _classify(code: str, details: str) -> tuple[str, str]:
    """A call's end as an outcome. A status that does not name the problem is a wrong
    status: an unexpected exception on the node (INTERNAL "internal error (...)", UNKNOWN),
    a malformed reply, or a status too large for the peer to receive (gRPC turns it into
    RESOURCE_EXHAUSTED on the receiving side)."""
    if code == "OK":
        return OK, "OK"
    oversized = code == "RESOURCE_EXHAUSTED" and "metadata" in details.lower()
    if code in ("UNKNOWN", "BAD_REPLY") or details.startswith("internal error (") or oversized:
        return WRONG, f"{code}: {details[:300]}"
    return CLEAN, code


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _spawn_node(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "phe_fl.cli", "node", "--config", str(config)]
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


# -- the federation under attack ----------------------------------------------------------------
class Federation:
    """The cluster, the querier and what every phase sends: keys generated once, a model
    trained once, valid objects of every kind."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.c = LocalCluster(
            workdir, n_nodes=N_NODES, fanout=2, params=PARAMS, deadline_s=ROOT_DEADLINE_S
        )
        self.down: set[int] = set()  # nodes stopped on purpose
        self.leaf: subprocess.Popen[bytes] | None = None  # the fresh leaf of the parent phase
        self.leaf_log = workdir / "node-2-fuzz.log"
        self.leaf_rss_start = float("nan")  # once its keys are installed
        self.log_marks: dict[str, int] = {}

    def start(self) -> None:
        self.c.start(120)
        q = Querier(self.c.root_address, self.c.querier_tls(), PARAMS, deadline_s=300)
        self.querier = q
        self.ctx: Context = q.ctx
        q.setup("fz-keys")
        self.spec = TrainingJob(n_features=N_FEATURES, iterations=1, batch_size=8, params=PARAMS)
        self.model = q.train("fz-model", self.spec, standardize=False)
        self.joint: JointPublicKey = q.joint_key("fz-joint")
        x = np.zeros((2, N_FEATURES))
        q.predict("fz-warm", self.model, self.spec, x)  # every job path once, before measuring
        self.queries = [ct.to_bytes() for ct in encrypt_queries(self.spec, self.ctx, x, self.joint)]
        self.querier_key = q.keys.public_key.to_bytes()
        self.kit = Kit(self)

    def stop(self) -> None:
        try:
            self.querier.close()
        except Exception:  # noqa: BLE001 - best effort
            pass
        if self.leaf is not None and self.leaf.poll() is None:
            self.leaf.terminate()
            self.leaf.wait(10)
        self.c.stop()

    # -- jobs ---------------------------------------------------------------------------------
    def job(self, kind: str) -> m.Job:
        jobs: dict[str, Callable[[], m.Job]] = {
            "setup": lambda: m.SetupJob((1,)),
            "stats": lambda: m.StatsJob(self.querier_key, N_FEATURES),
            "train": lambda: m.TrainJob(self.spec, standardize=False),
            "train-std": lambda: m.TrainJob(self.spec, standardize=True),
            "model_weights": lambda: m.ModelWeightsJob("fz-model"),
            "model_info": lambda: m.ModelInfoJob("fz-model"),
            "predict": lambda: m.PredictJob("fz-model", self.querier_key, tuple(self.queries)),
            "joint_key": lambda: m.JointKeyJob(),
            "status": lambda: m.StatusJob(),
            "watch": lambda: m.WatchJob("fz-model"),
            "list_jobs": lambda: m.ListJobsJob(),
            "cancel": lambda: m.CancelJob("fz-model"),
            "list_models": lambda: m.ListModelsJob(),
        }
        return jobs[kind]()

    def job_proto(self, kind: str, job_id: str) -> query_pb2.JobRequest:
        return serde.job_request_to_proto(m.JobRequest(job_id, PARAMS, self.job(kind)))

    # -- processes ----------------------------------------------------------------------------
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        out = {f"node-{i}": p for i, p in enumerate(self.c.processes) if i not in self.down}
        if self.leaf is not None:
            out["node-2-fuzz"] = self.leaf
        return out

    def log_path(self, name: str) -> Path:
        return self.leaf_log if name == "node-2-fuzz" else self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""

    def new_log(self, name: str) -> str:
        """What ``name`` logged since the last call (an input's evidence), at most 64 KiB."""
        try:
            with open(self.log_path(name), "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                start = max(self.log_marks.get(name, 0), end - (64 << 10))
                f.seek(start)
                data = f.read(end - start)
        except OSError:
            return ""
        self.log_marks[name] = end
        return data.decode(errors="replace")

    def crashed(self) -> list[str]:
        """Node processes that exited by themselves, with the end of their log."""
        out = []
        for name, proc in self.processes().items():
            if proc.poll() is not None:
                out.append(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
        return out

    def recover(self) -> None:
        """Start again every node that died (the run goes on, the crash is counted)."""
        for i, proc in enumerate(self.c.processes):
            if i not in self.down and proc.poll() is not None:
                self.c.start_node(i)
        if self.leaf is not None and self.leaf.poll() is not None:
            self.leaf = _spawn_node(self.workdir / "node-2-fuzz.toml", self.leaf_log)
        self.c.wait_ready(90, nodes=N_NODES - len(self.down))

    def rss(self) -> dict[str, float]:
        return {name: _rss_mb(p.pid) for name, p in self.processes().items()}

    def envelope_pool(self) -> dict[Kind, bytes]:
        return self.kit.pool


class Kit:
    """What the fake peers send, made in the test process: a whole simulated key
    generation of three parties (the fresh leaf installs its keys) and a stand-in party 2
    (the fake child's shares)."""

    def __init__(self, fed: Federation) -> None:
        ctx = fed.ctx
        self.ctx = ctx
        pkg = PublicKeyGen(ctx)
        lead, self.crp = pkg.gen_crp(N_NODES)
        s1, share1 = pkg.gen_share(1, self.crp)
        s2, share2 = pkg.gen_share(2, self.crp)
        self.joint = pkg.finalize(pkg.aggregate(pkg.aggregate(self.crp, share1), share2))
        parties = [Party(lead), Party(s1), Party(s2)]
        self.stand_in = Party(s2)
        relin = RelinKeyGen(self.joint)
        self.relin_crp = parties[0].relin_crp(relin)
        one = [p.relin_round1(relin, self.relin_crp) for p in parties]
        self.round_one = relin.aggregate(relin.aggregate(one[0], one[1]), one[2])
        two = [p.relin_round2(relin, self.round_one) for p in parties]
        agg = relin.aggregate_round2(relin.aggregate_round2(two[0], two[1]), two[2])
        self.relin_key = relin.finalize(agg)
        self.indices = tuple(fed.spec.rotation_indices())
        rot = RotationKeyGen(self.joint, list(self.indices))
        self.rot_crp = parties[0].rotation_crp(rot)
        shares = [p.rotation_keys(rot, self.rot_crp) for p in parties]
        self.rotation_keys = rot.finalize(
            rot.aggregate(rot.aggregate(shares[0], shares[1]), shares[2])
        )
        values = np.linspace(-1, 1, 3 * N_FEATURES)
        self.ct = ctx.encrypt(values, self.joint)
        self.weights = ctx.encrypt(np.zeros(8), self.joint)
        refresh = Refresh(ctx)
        self.prepared = refresh.prepare(self.ct)
        self.refresh_crp = refresh.gen_crp(self.joint)
        self.querier_key = fed.querier_key
        fed_ct = fed.ctx.ciphertext_from_bytes(fed.queries[0])
        self.pool: dict[Kind, bytes] = {
            Kind.CIPHERTEXT: fed.queries[0],
            Kind.QUERIER_PUBLIC_KEY: fed.querier_key,
            Kind.JOINT_PUBLIC_KEY: fed.joint.to_bytes(),
            Kind.PUBLIC_KEY_SHARE: self.crp.to_bytes(),
            Kind.DECRYPTION_SHARE: self.stand_in.decryption_share(fed_ct).to_bytes(),
            Kind.REFRESH_CRP: self.refresh_crp.to_bytes(),
            Kind.COMPACT_MASKED_CIPHERTEXT: self.masked_update(),
        }

    def masked_update(self) -> bytes:
        """A FedAvg chunk as the root sends it for decryption: compact, without c0."""
        update = np.linspace(-1, 1, 100).astype(np.float32)
        (chunk,) = encrypt_chunks(self.ctx, self.joint, update, 0, 1, n_parties=N_NODES)
        return masked(self.ctx, chunk)

    def step(self, name: str) -> m.TreeStep:
        """A valid request of each step, for the fresh leaf (under the simulated keys)."""
        steps: dict[str, Callable[[], m.TreeStep]] = {
            "ping": m.PingRequest,
            "public_key": lambda: m.PublicKeyShareRequest(self.crp.to_bytes()),
            "install_joint_key": lambda: m.InstallJointKeyRequest(self.joint.to_bytes()),
            "relin_round_one": lambda: m.RelinRoundOneRequest(self.relin_crp.to_bytes()),
            "relin_round_two": lambda: m.RelinRoundTwoRequest(self.round_one.to_bytes()),
            "install_relin_key": lambda: m.InstallRelinKeyRequest(self.relin_key.to_bytes()),
            "rotation_keys": lambda: m.RotationKeysShareRequest(
                self.rot_crp.to_bytes(), self.indices
            ),
            "install_rotation_keys": lambda: m.InstallRotationKeysRequest(
                self.rotation_keys.to_bytes()
            ),
            "statistics": lambda: m.StatisticsRequest(N_FEATURES),
            "decrypt_statistics": lambda: m.DecryptStatisticsRequest(self.ct.to_bytes()),
            "decrypt_model": lambda: m.DecryptModelRequest("fz-model", self.ct.to_bytes()),
            "key_switch": lambda: m.KeySwitchRequest(
                m.Purpose.PREDICTION, "querier", self.querier_key, (self.ct.to_bytes(),)
            ),
            "refresh": lambda: m.RefreshShareRequest(
                (self.prepared.to_bytes(),), (self.refresh_crp.to_bytes(),)
            ),
            "prepare_training": lambda: m.PrepareTrainingRequest(
                TrainingJob(n_features=N_FEATURES, iterations=1, batch_size=8, params=PARAMS),
                None,
            ),
            "gradient": lambda: m.GradientRequest(0, 24, self.weights.to_bytes()),
            "margin_moment": lambda: m.MarginMomentRequest(1, 24, self.weights.to_bytes(), 0.0, 2),
            "prepare_network": lambda: m.PrepareNetworkRequest(
                MLPJob(N_FEATURES, 2, iterations=1, batch_size=8, params=PARAMS), None
            ),
            "network_map": lambda: m.NetworkMapRequest(0, 24, (self.weights.to_bytes(),)),
            "fedavg_prepare": lambda: m.FedAvgPrepareRequest(FedAvgSpec("fz-app", rounds=1)),
            "fedavg_global": lambda: m.FedAvgGlobalRequest(1, 0, bytes(64)),
            "fedavg_train": lambda: m.FedAvgTrainRequest(1, bytes(32)),
            "fedavg_update": lambda: m.FedAvgUpdateRequest(1, 0, 1, 100),
            "fedavg_decrypt": lambda: m.FedAvgDecryptRequest(
                1, 0, (self.masked_update(),), ("node-0", "node-1", "node-2")
            ),
        }
        return steps[name]()

    # -- the fake child's answers (phase B) -----------------------------------------------
    def answer(self, fed: Federation, request: tree_pb2.TreeRequest) -> m.TreeResult | None:
        """A well-formed answer of node-2 to one of the root's requests (None: no answer
        of that step here)."""
        step = request.WhichOneof("step")
        if step == "ping":
            return m.PingResponse((m.NodeStatus("node-2", "node-0", "ready"),))
        if step == "statistics":
            sums = fed.ctx.encrypt(np.zeros(3 * N_FEATURES), fed.joint)
            return m.StatisticsResponse(sums.to_bytes())
        if step == "prepare_training":
            return m.PrepareTrainingResponse(8)
        if step == "key_switch":
            r = request.key_switch
            qpk = QuerierPublicKey.from_bytes(fed.ctx, r.querier_key)
            cts = [fed.ctx.ciphertext_from_bytes(c) for c in r.ciphertexts]
            shares = [self.stand_in.key_switch_share(ct, qpk).to_bytes() for ct in cts]
            return m.KeySwitchResponse(tuple(shares))
        if step == "decrypt_statistics":
            ct = fed.ctx.ciphertext_from_bytes(request.decrypt_statistics.ciphertext)
            return m.DecryptStatisticsResponse(self.stand_in.decryption_share(ct).to_bytes())
        if step == "gradient":
            return m.GradientResponse(request.gradient.weights)
        return None


WRONG_TYPES: list[bytes] = []


def _wrong_types() -> list[bytes]:
    """Serialized messages of other types than the one a stream carries."""
    if not WRONG_TYPES:
        req = m.TreeRequest("fz", PARAMS, N_NODES, m.StatisticsRequest(N_FEATURES), 5.0, "stats")
        WRONG_TYPES.extend(
            [
                serde.tree_request_to_proto(req).SerializeToString(),
                serde.parent_message_to_proto(req).SerializeToString(),
                serde.child_message_to_proto(
                    m.Hello("node-2", PARAMS, N_NODES)
                ).SerializeToString(),
                serde.parent_message_to_proto(m.Welcome("node-0")).SerializeToString(),
                query_pb2.JobReply(accepted=query_pb2.JobInfo(job_id="x")).SerializeToString(),
                serde.job_request_to_proto(m.JobRequest("fz", PARAMS)).SerializeToString(),
                ml_pb2.GlmJobSpec(n_features=3, model="logistic").SerializeToString(),
                Frame(call_id=7, total_size=3, data=b"abc").SerializeToString(),
                tree_pb2.TreeResponse(
                    error=common_pb2.Error(code=common_pb2.Error.INVALID_ARGUMENT, message="no")
                ).SerializeToString(),
            ]
        )
    return WRONG_TYPES


# -- Root.Submit --------------------------------------------------------------------------------
class SubmitCall:
    """One Root.Submit call read on its own thread: replies noted as they come."""

    def __init__(self, stub: Any, frames: Sequence[Frame], timeout: float) -> None:
        self.frames_in = 0
        self.accepted: str | None = None
        self.result: str | None = None
        self.code = ""
        self.details = ""
        self.last = time.monotonic()
        self.done = threading.Event()
        self._call = stub.Submit(iter(list(frames)), timeout=timeout)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        reader = FrameReader()
        try:
            for frame in self._call:
                self.frames_in += 1
                self.last = time.monotonic()
                done = reader.feed(frame)
                if done is None:
                    continue
                reply = serde.read_job_reply(done[1])
                if isinstance(reply, m.Accepted):
                    self.accepted = reply.job.job_id
                elif not isinstance(reply, m.ProgressEvent):
                    self.result = type(reply).__name__
            self.code = "OK"
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            self.code = code.name if code is not None else "UNKNOWN"
            self.details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
        except PheFlError as exc:
            self.code, self.details = "BAD_REPLY", f"the root sent a malformed reply: {exc}"
        finally:
            self.done.set()

    def cancel(self) -> None:
        self._call.cancel()


class Submitter:
    """The querier's side of Root.Submit, with raw frames."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.channel = open_channel(fed.c.root_address, fed.c.querier_tls())
        self.stub = query_pb2_grpc.RootStub(self.channel)
        self.n = 0

    def close(self) -> None:
        self.channel.close()

    def start(self, frames: Sequence[Frame]) -> SubmitCall:
        return SubmitCall(self.stub, frames, HANG_S + JOB_S + 60)

    def run(self, frames: Sequence[Frame]) -> tuple[str, str]:
        """Send ``frames``, wait for the end; a job still running after JOB_S is
        cancelled (slow, not hung, as long as it kept reporting)."""
        call = self.start(frames)
        began = time.monotonic()
        while not call.done.wait(0.05):
            waited = time.monotonic() - began
            if call.frames_in == 0 and waited > HANG_S:
                call.cancel()
                return HANG, f"no reply and no status within {HANG_S:.0f} s"
            if call.frames_in == 0 or waited < JOB_S:
                continue
            call.cancel()
            silent = time.monotonic() - call.last
            if not self.stop_job(call.accepted):
                return HANG, f"job {call.accepted} did not end after a cancel"
            if silent > HANG_S:
                return HANG, f"accepted, then silent for {silent:.0f} s"
            return OK, "still running after the input's time: cancelled"
        kind, detail = _classify(call.code, call.details)
        if kind == OK:
            detail = f"OK: {call.result or 'accepted'}"
        if call.accepted and call.code == "OK" and call.result is None:  # detached
            if not self.stop_job(call.accepted):
                return HANG, f"detached job {call.accepted} did not end after a cancel"
        return kind, detail

    def cancel_job(self, job_id: str) -> None:
        """Ask the root to cancel ``job_id`` (it stops at its next step)."""
        self.n += 1
        cancel = m.JobRequest(f"fz-stop-{self.n}", PARAMS, m.CancelJob(job_id))
        call = self.start(list(serde.job_request_frames(cancel)))
        call.done.wait(HANG_S)

    def stop_job(self, job_id: str | None) -> bool:
        """Cancel ``job_id`` and follow it to its end; False if it does not end."""
        if job_id is None:
            return True
        self.cancel_job(job_id)
        watch = m.JobRequest(f"fz-follow-{self.n}", PARAMS, m.WatchJob(job_id))
        call = self.start(list(serde.job_request_frames(watch)))
        if call.done.wait(HANG_S + JOB_S):
            return True
        call.cancel()
        return False


def fuzz_submit(fed: Federation, tally: Tally, rng: random.Random, rounds: int) -> None:
    """Root.Submit as the querier: every job kind, every mutation."""
    mut = Mutator(rng, fed.envelope_pool())
    sub = Submitter(fed)
    inputs = []
    for kind in JOB_KINDS:
        count = SUBMIT_PER_KIND * rounds
        inputs += [(kind, name) for name in mut.schedule(SUBMIT_MUTATIONS, count)]
        if kind in ("stats", "predict"):
            inputs += [(kind, "bytes-field")] * (SUBMIT_ENVELOPES * rounds)
    rng.shuffle(inputs)
    try:
        for i, (kind, name) in enumerate(inputs):
            proto = fed.job_proto(kind, f"fz-{i}-{kind}")
            if name == "detach":
                proto.detach = True
                inp = Input(_chunks(proto.SerializeToString(), 0), "detach")
            else:
                inp = mut.message_input(name, proto, wrong=_wrong_types())
            t = time.monotonic()
            outcome, detail = sub.run(inp.frames)
            _record(fed, tally, f"Root.Submit/{kind}", inp.desc, outcome, detail, t, "node-0")
    finally:
        sub.close()


def _record(
    fed: Federation,
    tally: Tally,
    target: str,
    desc: str,
    outcome: str,
    detail: str,
    started: float,
    node: str,
) -> None:
    """Count one input; a dead node turns it into a crash (and is started again)."""
    seconds = time.monotonic() - started
    dead = fed.crashed()
    log = fed.new_log(node)
    if dead:
        outcome, detail, log = CRASH, "; ".join(d.split("\n", 1)[0] for d in dead), "\n".join(dead)
    tally.add(target, desc, outcome, detail, seconds, log if outcome != OK else "")
    if dead:
        fed.recover()


# -- Tree.Connect, as a child -------------------------------------------------------------------
class ChildStream:
    """A Tree.Connect stream to a parent, as a child: frames out through a queue, the
    parent's messages (or the end of the stream) in through another."""

    def __init__(self, address: str, fed: Federation, node_id: str = "node-2") -> None:
        self.channel = open_channel(address, fed.c.node_tls(node_id), peer_id="node-0")
        self.out: queue.Queue[Frame | None] = queue.Queue()
        self.inbox: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        stub = tree_pb2_grpc.TreeStub(self.channel)
        self.call = stub.Connect(iter(self.out.get, None), timeout=600)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        reader = FrameReader()
        try:
            for frame in self.call:
                done = reader.feed(frame)
                if done is not None:
                    self.inbox.put(("msg", done[0], done[1]))
            self.inbox.put(("end", "OK", ""))
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = (exc.details() if hasattr(exc, "details") else "") or ""
            self.inbox.put(("end", code.name if code else "UNKNOWN", details))
        except PheFlError as exc:
            self.inbox.put(("end", "BAD_REPLY", f"the parent sent malformed frames: {exc}"))

    def send(self, frames: Sequence[Frame]) -> None:
        for f in frames:
            self.out.put(f)

    def end_sending(self) -> None:
        self.out.put(None)

    def event(self, timeout: float) -> tuple[str, Any, Any] | None:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.out.put(None)
        self.call.cancel()
        self.channel.close()


def _welcomed(fed: Federation) -> ChildStream | None:
    """A stream as node-2 with a valid Hello, once the root welcomed it."""
    stream = ChildStream(fed.c.root_address, fed)
    stream.send(serde.child_message_frames(m.Hello("node-2", PARAMS, N_NODES)))
    ev = stream.event(HANG_S)
    if ev is not None and ev[0] == "msg":
        body = tree_pb2.ParentMessage.FromString(ev[2])
        if body.WhichOneof("body") == "welcome":
            return stream
    stream.close()
    return None


def fuzz_hellos(fed: Federation, tally: Tally, rng: random.Random, rounds: int) -> None:
    mut = Mutator(rng, fed.envelope_pool())
    base = serde.child_message_to_proto(m.Hello("node-2", PARAMS, N_NODES))
    for name in mut.schedule(HELLO_MUTATIONS, HELLO_INPUTS * rounds):
        inp = mut.message_input(name, base, wrong=_wrong_types())
        t = time.monotonic()
        stream = ChildStream(fed.c.root_address, fed)
        stream.send(inp.frames)
        stream.end_sending()
        ev = stream.event(HANG_S)
        if ev is None:
            outcome, detail = HANG, f"no Welcome and no status within {HANG_S:.0f} s"
        elif ev[0] == "msg":
            kind = tree_pb2.ParentMessage.FromString(ev[2]).WhichOneof("body")
            outcome, detail = OK, f"answered with {kind}"
        else:
            outcome, detail = _classify(ev[1], ev[2])
        stream.close()
        _record(fed, tally, "Tree.Connect(child)/hello", inp.desc, outcome, detail, t, "node-0")


def stalled_hellos(fed: Federation, tally: Tally) -> None:
    """Connect streams that never finish their Hello, held open while a querier asks for
    the status: the root must still answer it."""
    release = threading.Event()

    def stalled() -> Iterator[Frame]:
        yield Frame(call_id=0, total_size=100, data=b"x")
        release.wait(HANG_S + 30)

    channel = open_channel(fed.c.root_address, fed.c.node_tls("node-2"), peer_id="node-0")
    stub = tree_pb2_grpc.TreeStub(channel)
    calls = [stub.Connect(stalled(), timeout=HANG_S + 30) for _ in range(STALLED_STREAMS)]
    sub = Submitter(fed)
    t = time.monotonic()
    try:
        time.sleep(1.0)  # the root now holds them, waiting for the rest of their Hello
        status = m.JobRequest("fz-stalled-status", PARAMS, m.StatusJob())
        call = sub.start(list(serde.job_request_frames(status)))
        if call.done.wait(HANG_S):
            outcome, detail = _classify(call.code, call.details)
        else:
            call.cancel()
            outcome = HANG
            detail = (
                f"with {STALLED_STREAMS} Connect streams of node-2 waiting for their Hello, "
                f"a status job got no answer within {HANG_S:.0f} s"
            )
    finally:
        release.set()
        for c in calls:
            c.cancel()
        channel.close()
        sub.close()
    desc = f"{STALLED_STREAMS} Connect streams as node-2, one frame of an unfinished Hello each"
    _record(fed, tally, "Tree.Connect(child)/stalled-hellos", desc, outcome, detail, t, "node-0")


def _answer_input(
    mut: Mutator,
    name: str,
    fed: Federation,
    request: tree_pb2.TreeRequest,
    call_id: int,
) -> Input:
    """A mutated answer of the fake child to ``request`` (call ``call_id``)."""
    rng = mut.rng
    step = request.WhichOneof("step")
    result = fed.kit.answer(fed, request)
    assert result is not None, step
    proto = serde.child_message_to_proto(m.TreeResponse(result))
    if name == "payload":
        if step == "ping":
            nodes = proto.response.ping.nodes
            pick = rng.randrange(3)
            if pick == 0:
                for i in range(2000):
                    nodes.add(node_id=f"node-{i}", parent_id="node-0", key_state="ready")
                what = "2000 node statuses"
            elif pick == 1:
                nodes[0].node_id = rng.choice(STRINGS)
                what = f"node id {_short(nodes[0].node_id)}"
            else:
                nodes[0].key_state = rng.choice(STRINGS)
                what = f"key state {_short(nodes[0].key_state)}"
            name = f"payload: {what}"
        elif step == "prepare_training":
            value = rng.choice((0, 1, 2**32, 2**63, 2**64 - 1))
            proto.response.prepare_training.global_batch = value
            name = f"payload: global_batch={value}"
        else:
            what = mut.bytes_field(proto)
            name = f"payload: {what}"
        data = proto.SerializeToString()
        return Input(_chunks(data, call_id), name, call_id, message=data)
    if name == "field-extreme":
        return mut.message_input(name, proto, call_id=call_id, skip=("ChildMessage.body",))
    if name == "wrong-result":
        other = m.PingResponse(()) if step != "ping" else m.PrepareTrainingResponse(8)
        data = serde.child_message_to_proto(m.TreeResponse(other)).SerializeToString()
        return Input(_chunks(data, call_id), f"{type(other).__name__} instead", call_id)
    if name == "failure":
        code = rng.choice((0, 1, 5, 9, 77))
        text = rng.choice(STRINGS)
        bad = tree_pb2.ChildMessage(
            response=tree_pb2.TreeResponse(error=common_pb2.Error(code=code, message=text))
        )
        data = bad.SerializeToString()
        return Input(_chunks(data, call_id), f"Failure code {code} {_short(text)}", call_id)
    if name == "empty-response":
        data = tree_pb2.ChildMessage(response=tree_pb2.TreeResponse()).SerializeToString()
        return Input(_chunks(data, call_id), "a TreeResponse without a result", call_id)
    if name == "second-hello":
        data = serde.child_message_to_proto(m.Hello("node-2", PARAMS, N_NODES)).SerializeToString()
        return Input(_chunks(data, call_id), "a second Hello as the answer", call_id)
    if name == "wrong-call-id":
        other = call_id + rng.randint(1, 2**32)
        frames = _chunks(proto.SerializeToString(), other)
        gone = m.Failure("UNAVAILABLE", "the answer went to another call")
        frames += serde.child_message_frames(m.TreeResponse(gone), call_id)
        return Input(frames, f"answered as call {other} (then a Failure as {call_id})", other)
    if name == "stats-flood":
        stats = proto.response.stats
        for i in range(5000):
            stats.add(node_id=f"node-{i}", seconds=float("nan"), bytes_sent=2**64 - 1)
        data = proto.SerializeToString()
        return Input(_chunks(data, call_id), "5000 NodeStats (NaN seconds)", call_id)
    return mut.message_input(name, proto, call_id=call_id, wrong=_wrong_types())


def fuzz_child_answers(fed: Federation, tally: Tally, rng: random.Random, rounds: int) -> None:
    """A valid Hello as node-2, then mutated answers to the root's real requests."""
    mut = Mutator(rng, fed.envelope_pool())
    sub = Submitter(fed)
    inputs = [
        (step, job, name)
        for step, job in CHILD_TARGETS
        for name in mut.schedule(ANSWER_MUTATIONS, ANSWERS_PER_STEP * rounds)
    ]
    rng.shuffle(inputs)
    try:
        for i, (target, job, name) in enumerate(inputs):
            t = time.monotonic()
            outcome, detail, desc = _one_answer(fed, sub, mut, target, job, name, f"fz-c{i}")
            _record(fed, tally, f"Tree.Connect(child)/{target}", desc, outcome, detail, t, "node-0")
    finally:
        sub.close()


def _one_answer(
    fed: Federation, sub: Submitter, mut: Mutator, target: str, job: str, name: str, job_id: str
) -> tuple[str, str, str]:
    stream = _welcomed(fed)
    if stream is None:
        return HANG, "the root did not welcome a valid Hello", name
    # the querier's job, on its own thread: the root's requests it causes are answered here
    run = sub.start(list(serde.job_request_frames(m.JobRequest(job_id, PARAMS, fed.job(job)))))
    desc, after, dropped, cancelled = name, "", 0, False
    mutated = False
    deadline = time.monotonic() + HANG_S + JOB_S
    try:
        while not run.done.is_set() and time.monotonic() < deadline:
            ev = stream.event(0.05)
            if ev is None:
                continue
            if ev[0] == "end":
                dropped += 1
                after = after or ("link dropped" if mutated else "")
                stream.close()
                stream = _welcomed(fed)
                if stream is None:
                    return HANG, "the root did not welcome node-2 again", desc
                continue
            call_id, data = ev[1], ev[2]
            body = tree_pb2.ParentMessage.FromString(data)
            if body.WhichOneof("body") != "request":
                continue
            request = body.request
            step = request.WhichOneof("step")
            if not mutated and step == target:
                inp = _answer_input(mut, name, fed, request, call_id)
                desc = inp.desc
                stream.send(inp.frames)
                mutated = True
                continue
            if mutated and not after:
                after = step if step != target else "asked again"
            if mutated and job.startswith("train") and not cancelled:
                cancelled = True  # a failed training waits for the tree and resumes: stop it
                sub.cancel_job(job_id)
            answer: m.TreeResult | m.Failure | None = None
            if step == "ping" or not mutated:
                answer = fed.kit.answer(fed, request)
            if answer is None:
                answer = m.Failure("UNAVAILABLE", "the fuzzing child gives up")
            stream.send(list(serde.child_message_frames(m.TreeResponse(answer), call_id)))
        if not run.done.is_set():
            run.cancel()
            sub.stop_job(job_id)
            return HANG, f"job {job} not over {HANG_S + JOB_S:.0f} s after it began", desc
    finally:
        if stream is not None:
            stream.close()
    if not mutated:
        return CLEAN, f"{run.code} before the {target} step (not reached)", desc
    kind, detail = _classify(run.code, run.details)
    if run.code == "CANCELLED" and cancelled:
        kind = OK if after not in ("link dropped", "ping", "asked again") else CLEAN
        detail = f"next: {after}"
    suffix = f"; link dropped {dropped}x" if dropped else ""
    return kind, f"{detail} (next: {after or '-'}){suffix}", desc


# -- Tree.Connect, as a parent ------------------------------------------------------------------
class ParentSession:
    """One Connect stream of the leaf to the fake parent."""

    def __init__(self, frames_in: Iterator[Frame], context: Any) -> None:
        self.inbox: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.outbox: queue.Queue[Frame | None] = queue.Queue()
        self.context = context
        self.began = time.monotonic()
        self.ended = threading.Event()
        threading.Thread(target=self._read, args=(frames_in,), daemon=True).start()

    def _read(self, frames_in: Iterator[Frame]) -> None:
        reader = FrameReader()
        try:
            for frame in frames_in:
                done = reader.feed(frame)
                if done is not None:
                    self.inbox.put(("msg", done[0], done[1]))
            self.inbox.put(("end", "closed", ""))
        except Exception as exc:  # noqa: BLE001 - the stream ended, whatever the reason
            self.inbox.put(("end", type(exc).__name__, str(exc)))
        finally:
            self.ended.set()

    def outgoing(self) -> Iterator[Frame]:
        while self.context.is_active() and not self.ended.is_set():
            try:
                frame = self.outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        self.outbox.put(None)


class FakeParent(tree_pb2_grpc.TreeServicer):  # type: ignore[misc]
    """Tree.Connect served by the test, with node-0's certificate."""

    def __init__(self) -> None:
        self.sessions: queue.Queue[ParentSession] = queue.Queue()

    def Connect(self, request_iterator: Iterator[Frame], context: Any) -> Iterator[Frame]:  # noqa: N802
        session = ParentSession(request_iterator, context)
        self.sessions.put(session)
        yield from session.outgoing()


class LeafDriver:
    """Talks to the fresh leaf through the fake parent: welcomes it, asks it things,
    waits for it to dial in again after it dropped the link."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.servicer = FakeParent()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        tree_pb2_grpc.add_TreeServicer_to_server(self.servicer, self.server)
        tls = fed.c.node_tls("node-0")
        creds = load_server_credentials(tls.cert, tls.key, tls.ca)
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()
        self.session: ParentSession | None = None
        self.calls = 100
        self.state = "new"

    def start_leaf(self) -> None:
        fed = self.fed
        text = fed.c.configs[2].read_text()
        text = re.sub(
            r'parent = \{ id = "node-0", address = "[^"]+" \}',
            f'parent = {{ id = "node-0", address = "127.0.0.1:{self.port}" }}',
            text,
        )
        text = text.replace('dir = "state/node-2"', 'dir = "state/node-2-fuzz"')
        text = text.replace("allow_decryption = false", "allow_decryption = true")
        config = fed.workdir / "node-2-fuzz.toml"
        config.write_text(text)
        fed.leaf = _spawn_node(config, fed.leaf_log)

    def stop(self) -> None:
        if self.session is not None:
            self.session.close()
        self.server.stop(0)

    def connect(self, timeout: float) -> bool:
        """The leaf's newest stream, welcomed; False if it does not come in time."""
        if self.session is not None and not self.session.ended.is_set():
            return True
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.fed.leaf is not None and self.fed.leaf.poll() is not None:
                return False
            try:
                session = self.servicer.sessions.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                kind, _, data = session.inbox.get(timeout=HANG_S)
            except queue.Empty:
                session.close()
                continue
            if kind != "msg":
                continue
            hello = tree_pb2.ChildMessage.FromString(data)
            if hello.WhichOneof("body") != "hello":
                session.close()
                continue
            for f in serde.parent_message_frames(m.Welcome("node-0")):
                session.outbox.put(f)
            self.session = session
            return True
        return False

    def age(self) -> float:
        return 0.0 if self.session is None else time.monotonic() - self.session.began

    def request(self, step: str, job_id: str) -> tree_pb2.ParentMessage:
        kinds = {
            "prepare_training": "train",
            "gradient": "train",
            "margin_moment": "train",
            "prepare_network": "train_network",
            "network_map": "train_network",
            "statistics": "stats",
            **{s: "fedavg" for s in READY_STEPS if s.startswith("fedavg")},
        }
        request = m.TreeRequest(
            job_id, PARAMS, N_NODES, self.fed.kit.step(step), ROOT_DEADLINE_S, kinds.get(step, "")
        )
        return serde.parent_message_to_proto(request)

    def next_call(self) -> int:
        self.calls += 1
        return self.calls

    def ask(self, inp: Input) -> tuple[str, str]:
        """Send one crafted stream; the leaf's answer as an outcome."""
        if not self.connect(RECONNECT_S):
            return HANG, "the leaf is not connected"
        session = self.session
        assert session is not None
        for f in inp.frames:
            session.outbox.put(f)
        if inp.incomplete:  # nothing to answer until the stream ends: end it
            time.sleep(0.2)
            session.close()
            session.ended.wait(HANG_S)
            if self.connect(RECONNECT_S):
                return CLEAN, "stream ended inside a message; the leaf dialed in again"
            return HANG, "the leaf did not dial in again"
        expect_none = _welcome_only(inp.message)
        until = time.monotonic() + HANG_S
        while time.monotonic() < until:
            try:
                ev = session.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if ev[0] == "end":
                if self.connect(RECONNECT_S):
                    return CLEAN, "the leaf dropped the link, then dialed in again"
                return HANG, f"the leaf dropped the link ({ev[2][:100]}) and did not come back"
            if ev[1] != inp.call_id:
                continue  # a late answer to an earlier input
            reply = tree_pb2.ChildMessage.FromString(ev[2])
            response = reply.response
            result = response.WhichOneof("result")
            if result == "error":
                code = common_pb2.Error.Code.Name(response.error.code)
                kind = _classify(code, response.error.message)[0]
                text = response.error.message[: 300 if kind != CLEAN else 60]
                return kind, f"Failure {code}: {text}"
            return OK, f"answered {result}"
        if expect_none:
            return OK, "a Welcome again: nothing to answer"
        return HANG, f"no answer within {HANG_S:.0f} s (link still open)"

    def valid(self, step: str, job_id: str) -> str:
        """A valid request (moves the leaf's key generation on); its answer."""
        msg = self.request(step, job_id)
        call = self.next_call()
        kind, detail = self.ask(Input(_chunks(msg.SerializeToString(), call), "valid", call))
        return f"{kind}: {detail}"

    def key_state(self) -> str:
        call = self.next_call()
        msg = self.request("ping", "fz-ping").SerializeToString()
        kind, detail = self.ask(Input(_chunks(msg, call), "ping", call))
        return detail if kind != OK else "answered"


def _welcome_only(message: bytes) -> bool:
    """Whether ``message`` parses as a ParentMessage that is a Welcome (nothing to answer)."""
    try:
        return tree_pb2.ParentMessage.FromString(message).WhichOneof("body") == "welcome"
    except Exception:  # noqa: BLE001
        return False


def _breaks_link(message: bytes, incomplete: bool) -> bool:
    """Whether the leaf will drop its link on this input: only a stream that ends inside a
    message (a whole message that does not decode is answered with a typed Failure)."""
    del message
    return incomplete


def fuzz_parent(
    fed: Federation, drv: LeafDriver, tally: Tally, rng: random.Random, rounds: int
) -> None:
    """Every step kind, mutated, to the fresh leaf; its key generation walked through on
    the way (each key-generation step is allowed once, in order)."""
    mut = Mutator(rng, fed.envelope_pool())
    if not drv.connect(90):
        tally.notes.append("the fresh leaf never dialed the fake parent")
        return
    breaking: deque[tuple[str, Input]] = deque()
    budget = PARENT_BREAKING * rounds
    steps = ("ping", *KEYGEN_STEPS, *READY_STEPS)
    wire_plan = Counter(rng.choice(steps) for _ in range(budget // 2))
    n = 0

    def run(step: str, inp: Input) -> None:
        t = time.monotonic()
        outcome, detail = drv.ask(inp)
        _record(
            fed, tally, f"Tree.Connect(parent)/{step}", inp.desc, outcome, detail, t, "node-2-fuzz"
        )

    def batch(step: str, count: int) -> None:
        nonlocal n, budget
        if step in ONE_SHOT:  # what a node may accept (and then refuse all else) comes last
            last = () if step.startswith("install") else ACCEPTABLE
            names = mut.schedule(ONE_SHOT_ENVELOPES, count - len(last)) + list(last)
            names = [f"payload:{e}" for e in names]
        else:
            names = mut.schedule(PARENT_MUTATIONS + PARENT_FRAME_MUTATIONS, count)
        names += mut.schedule(WIRE_MUTATIONS + FRAME_MUTATIONS, wire_plan[step])
        for name in names:
            n += 1
            job_id = "fz-p-train" if step in ("gradient", "margin_moment") else f"fz-p{n}"
            base = drv.request(step, job_id)
            call = drv.next_call()
            for _ in range(4):  # the link-dropping ones are budgeted: draw again
                if name.startswith("payload"):
                    inp = _parent_payload(mut, base, call, name.partition(":")[2] or None)
                else:
                    inp = mut.message_input(
                        name, base, call_id=call, wrong=_wrong_types(), skip=("ParentMessage.body",)
                    )
                if not _breaks_link(inp.message, inp.incomplete) or budget > 0:
                    break
                if name in WIRE_MUTATIONS or name in FRAME_MUTATIONS:
                    break
                name = rng.choice(PARENT_MUTATIONS)
            if _breaks_link(inp.message, inp.incomplete):
                budget -= 1
                breaking.append((step, inp))
            else:
                run(step, inp)
            while breaking and drv.age() > 10.5:  # the leaf's backoff is back to 0.2 s
                run(*breaking.popleft())

    per_step = PARENT_PER_STEP * rounds
    batch("ping", per_step)
    for step in KEYGEN_STEPS:
        batch(step, per_step)
        got = drv.valid(step, "fz-p-keys")
        if not got.startswith(OK) and "FAILED_PRECONDITION" not in got:  # else: done already
            tally.notes.append(f"valid {step} for the fresh leaf: {got}")
    fed.leaf_rss_start = _rss_mb(fed.leaf.pid) if fed.leaf else float("nan")
    got = drv.valid("prepare_training", "fz-p-train")
    if not got.startswith(OK):
        tally.notes.append(f"valid prepare_training for the fresh leaf: {got}")
    for step in READY_STEPS:
        batch(step, per_step)
    while breaking:
        run(*breaking.popleft())


def _parent_payload(
    mut: Mutator, base: tree_pb2.ParentMessage, call: int, envelope: str | None = None
) -> Input:
    """The step's own payload mutated: its envelopes (by ``envelope``, else any envelope
    mutation), else its scalar fields."""
    work = tree_pb2.ParentMessage()
    work.CopyFrom(base)
    step = work.request.WhichOneof("step")
    inner = getattr(work.request, step)
    what = (
        mut.bytes_field(inner, envelope=envelope)
        or mut.field_extreme(inner)
        or mut.field_extreme(work.request)
    )
    data = work.SerializeToString()
    return Input(_chunks(data, call), f"payload: {step}.{what}", call, message=data)


# -- the whole run ------------------------------------------------------------------------------
def _serving_stats(fed: Federation) -> str:
    """Whether the federation still computes: a status job and pooled statistics."""
    try:
        status = fed.c.status()
        names = sorted(n.node_id for n in status.nodes)
        q = Querier(fed.c.root_address, fed.c.querier_tls(), PARAMS, deadline_s=60)
        try:
            count = q.stats(f"fz-check-{time.monotonic_ns()}", N_FEATURES).count
        finally:
            q.close()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return f"no: {type(exc).__name__}: {exc}"[:300]
    ok = len(names) == N_NODES and count == SAMPLES
    return f"{'yes' if ok else 'no'}: status lists {names}, pooled statistics count {count}"


def run_fuzz(workdir: Path, seed: int, rounds: int, log: Callable[[str], None] = print) -> Tally:
    """The whole fuzz campaign on a fresh cluster in ``workdir``; the tally of outcomes."""
    rng = random.Random(seed)
    tally = Tally(seed, rounds)
    fed = Federation(workdir)
    t0 = time.monotonic()
    fed.start()
    tally.phases["setup"] = time.monotonic() - t0
    for name in ("node-0", "node-1", "node-2"):
        fed.new_log(name)
    start_rss = fed.rss()
    tally.timeline["setup"] = _rounded(start_rss)
    drv: LeafDriver | None = None
    try:
        t = time.monotonic()
        log("fuzzing Root.Submit ...")
        fuzz_submit(fed, tally, rng, rounds)
        tally.phases["Root.Submit"] = time.monotonic() - t
        tally.timeline["Root.Submit"] = _rounded(fed.rss())
        tally.serving["after Root.Submit"] = _serving_stats(fed)
        node2_end = fed.rss().get("node-2", float("nan"))

        t = time.monotonic()
        log("fuzzing Tree.Connect as a child ...")
        fed.c.stop_node(2)
        fed.down.add(2)
        drv = LeafDriver(fed)
        drv.start_leaf()  # it starts while the child phase runs
        fuzz_hellos(fed, tally, rng, rounds)
        stalled_hellos(fed, tally)
        fuzz_child_answers(fed, tally, rng, rounds)
        tally.phases["Tree.Connect(child)"] = time.monotonic() - t
        tally.timeline["Tree.Connect(child)"] = _rounded(fed.rss())
        try:
            status = fed.c.status()
            alive = sorted(n.node_id for n in status.nodes)
            ok = alive == ["node-0", "node-1"] and status.missing == ("node-2",)
            tally.serving["after Tree.Connect(child)"] = (
                f"{'yes' if ok else 'no'}: status lists {alive}, missing {list(status.missing)}"
            )
        except Exception as exc:  # noqa: BLE001
            tally.serving["after Tree.Connect(child)"] = f"no: {exc}"[:300]

        t = time.monotonic()
        log("fuzzing Tree.Connect as a parent ...")
        fuzz_parent(fed, drv, tally, rng, rounds)
        tally.phases["Tree.Connect(parent)"] = time.monotonic() - t
        tally.timeline["Tree.Connect(parent)"] = _rounded(fed.rss())
        leaf_end = _rss_mb(fed.leaf.pid) if fed.leaf else float("nan")
        state = drv.key_state()
        alive = fed.leaf is not None and fed.leaf.poll() is None
        tally.serving["the fresh leaf, after Tree.Connect(parent)"] = (
            f"{'yes' if alive and state == 'answered' else 'no'}: a ping {state}"
        )
        if fed.leaf is not None:
            fed.leaf.terminate()
            fed.leaf.wait(10)
        fed.leaf = None

        fed.c.start_node(2)
        fed.down.discard(2)
        fed.c.wait_ready(90)
        tally.serving["at the end (node-2 back)"] = _serving_stats(fed)
        end_rss = fed.rss()
        for name in ("node-0", "node-1"):
            _memory(tally, name, start_rss[name], end_rss[name], "whole run")
        _memory(tally, "node-2", start_rss["node-2"], node2_end, "Root.Submit phase")
        _memory(tally, "node-2-fuzz", fed.leaf_rss_start, leaf_end, "after its keys, to the end")
    finally:
        if drv is not None:
            drv.stop()
        fed.stop()
    tally.phases["total"] = time.monotonic() - t0
    return tally


def _rounded(rss: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in rss.items()}


def _memory(tally: Tally, name: str, start: float, end: float, span: str) -> None:
    tally.memory[name] = {
        "start_mb": round(start, 1),
        "end_mb": round(end, 1),
        "growth_mb": round(end - start, 1),
        "span": span,
    }


def machine() -> dict[str, Any]:
    """Where a run happened."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    import openfhe

    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "openfhe": getattr(openfhe, "__version__", ""),
        "grpcio": grpc.__version__,
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_at_start": list(os.getloadavg()),
    }


def seed_from_env() -> int:
    return int(os.environ.get(SEED_ENV, DEFAULT_SEED))


def check(tally: Tally) -> list[str]:
    """What the run must not show."""
    problems = []
    if tally.total(CRASH):
        problems.append(f"{tally.total(CRASH)} crash(es)")
    if tally.total(HANG):
        problems.append(f"{tally.total(HANG)} hang(s)")
    if not tally.still_serving:
        problems.append("a node stopped serving")
    if not tally.max_growth_mb <= MAX_RSS_GROWTH_MB:
        problems.append(f"memory grew {tally.max_growth_mb:.1f} MB > {MAX_RSS_GROWTH_MB:.0f} MB")
    return problems


@pytest.mark.slow
def test_fuzzed_rpcs_never_crash_hang_or_stop_a_node(tmp_path: Path) -> None:
    seed = seed_from_env()
    print(f"\nfuzz seed {seed} (replay with {SEED_ENV}={seed})")
    tally = run_fuzz(tmp_path, seed, rounds=1)
    print(tally.table())
    (tmp_path / "hostile.json").write_text(json.dumps(tally.to_json(), indent=1, default=str))
    every = {f"Root.Submit/{kind}" for kind in JOB_KINDS} | {"Tree.Connect(child)/hello"}
    every |= {f"Tree.Connect(child)/{step}" for step, _ in CHILD_TARGETS}
    every |= {f"Tree.Connect(parent)/{s}" for s in ("ping", *KEYGEN_STEPS, *READY_STEPS)}
    assert not every - set(tally.counts), f"never fuzzed: {sorted(every - set(tally.counts))}"
    problems = check(tally)
    found = "; ".join(f"{n['outcome']} {n['target']}: {n['detail'][:200]}" for n in tally.notable)
    assert not problems, f"seed {seed}: {', '.join(problems)} ({found})"
