"""Federation v2 serde: every domain message survives its proto and the wire, every message
class is in a table, malformed input is refused by name, and frames reassemble."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message as PbMessage
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.federation import messages as m
from phe_fl.federation import serde
from phe_fl.federation.serde import CHUNK, MAX_PENDING_MESSAGES, FrameReader, to_frames
from phe_fl.federation.status import STATUS_TABLE
from phe_fl.mhe.context import FloatArray
from phe_fl.mhe.params import PARAMETER_SETS
from phe_fl.ml import MLPJob, TrainingJob
from phe_fl.v2 import common_pb2, ml_pb2, query_pb2, tree_pb2

ROOT = Path(__file__).resolve().parents[2]

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies: field values within the proto's ranges ------------------------------------------
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
S32 = st.integers(-(2**31), 2**31 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=12)
_SCALARS = {
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=48),
    FieldDescriptor.TYPE_STRING: TEXT,
    FieldDescriptor.TYPE_DOUBLE: FINITE,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_UINT32: U32,
    FieldDescriptor.TYPE_UINT64: U64,
    FieldDescriptor.TYPE_SINT32: S32,
}


@st.composite
def training_jobs(draw: st.DrawFn) -> TrainingJob:
    model = draw(st.sampled_from(["logistic", "linear"]))
    if model == "logistic":
        degree, bound = draw(st.integers(1, 3)), draw(st.floats(0.1, 50.0))
    else:  # not checked for a linear model, but carried all the same
        degree, bound = draw(U32), draw(FINITE)
    try:
        return TrainingJob(
            n_features=draw(st.integers(1, 64)),
            model=model,
            learning_rate=draw(st.floats(1e-6, 1e6)),
            batch_size=draw(st.integers(1, 2**32 - 1)),
            iterations=draw(U32),
            activation_degree=degree,
            activation_bound=bound,
            activation_method=draw(st.sampled_from(["lstsq", "chebyshev"])),
            params=draw(st.sampled_from(sorted(PARAMETER_SETS))),
            fit_intercept=draw(st.booleans()),
            allow_model_decryption=draw(st.booleans()),
            momentum=draw(st.floats(0.0, 1.0, exclude_max=True)),
            nesterov=draw(st.booleans()),
        )
    except ParameterError:  # e.g. a degree the parameter set has no levels for
        reject()


@st.composite
def network_jobs(draw: st.DrawFn) -> MLPJob:
    try:
        return MLPJob(
            n_features=draw(st.integers(1, 16)),
            n_classes=draw(st.integers(2, 10)),
            hidden=tuple(draw(st.lists(st.integers(1, 16), max_size=3))),
            learning_rate=draw(st.floats(1e-6, 1e6)),
            batch_size=draw(st.integers(1, 2**32 - 1)),
            iterations=draw(U32),
            momentum=draw(st.floats(0.0, 1.0, exclude_max=True)),
            nesterov=draw(st.booleans()),
            hidden_activation=draw(st.sampled_from(["relu", "sigmoid"])),
            hidden_degree=draw(st.integers(2, 3)),
            hidden_bound=draw(st.floats(0.1, 50.0)),
            output_degree=draw(st.sampled_from([1, 5])),
            output_bound=draw(st.floats(0.1, 50.0)),
            activation_method=draw(st.sampled_from(["lstsq", "chebyshev"])),
            params=draw(st.sampled_from(sorted(PARAMETER_SETS))),
            seed=draw(st.integers(0, 2**63)),
            init_scale=draw(st.floats(0.01, 10.0)),
            allow_model_decryption=draw(st.booleans()),
        )
    except ParameterError:  # e.g. layers wider than the parameter set's slots
        reject()


FEDAVG_SPECS = st.builds(
    FedAvgSpec,
    app=st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    rounds=st.integers(1, 100_000),
    epochs=st.integers(1, 1000),
    batch_size=st.integers(1, 1 << 20),
    learning_rate=st.floats(1e-9, 100.0),
    seed=st.integers(0, (1 << 63) - 1),
)


def _floats(values: list[float]) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


@st.composite
def standardizations(draw: st.DrawFn) -> m.Standardization:
    n = draw(st.integers(0, 8))
    positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)
    mean = draw(st.lists(FINITE, min_size=n, max_size=n))
    std = draw(st.lists(positive, min_size=n, max_size=n))
    return m.Standardization(_floats(mean), _floats(std))


_PB_MODULES = {
    "common.proto": common_pb2,
    "ml.proto": ml_pb2,
    "tree.proto": tree_pb2,
    "query.proto": query_pb2,
}


def _pb_class(owner: type[PbMessage], field: str) -> type[PbMessage]:
    """The generated class of message field ``field`` of ``owner``."""
    desc = owner.DESCRIPTOR.fields_by_name[field].message_type
    module = _PB_MODULES[desc.file.name.split("/")[-1]]
    return getattr(module, desc.name)  # type: ignore[no-any-return]


@functools.cache
def flat(cls: type[Any], pb_cls: type[PbMessage]) -> st.SearchStrategy[Any]:
    """Instances of a domain message, each field drawn within its proto field's range;
    nested messages (one, or a tuple of them) are drawn the same way, from their own proto."""
    hints = typing.get_type_hints(cls, vars(m))
    fields = pb_cls.DESCRIPTOR.fields_by_name
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        hint, fd = hints[f.name], fields[f.name]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else None
        if hint is m.Purpose:
            kwargs[f.name] = st.sampled_from(m.Purpose)
        elif hint is TrainingJob:
            kwargs[f.name] = training_jobs()
        elif hint == TrainingJob | None:
            kwargs[f.name] = st.none() | training_jobs()
        elif hint is MLPJob:
            kwargs[f.name] = network_jobs()
        elif hint == MLPJob | None:
            kwargs[f.name] = st.none() | network_jobs()
        elif hint is FedAvgSpec:
            kwargs[f.name] = FEDAVG_SPECS
        elif hint == m.Standardization | None:
            kwargs[f.name] = st.none() | standardizations()
        elif hint == m.DataSchema | None:
            kwargs[f.name] = st.none() | flat(m.DataSchema, _pb_class(pb_cls, f.name))
        elif hint is FloatArray:
            kwargs[f.name] = st.lists(FINITE, max_size=8).map(_floats)
        elif item is not None and dataclasses.is_dataclass(item):
            nested = flat(item, _pb_class(pb_cls, f.name))
            kwargs[f.name] = st.lists(nested, max_size=3).map(tuple)
        elif item is not None:
            kwargs[f.name] = st.lists(_SCALARS[fd.type], max_size=4).map(tuple)
        elif dataclasses.is_dataclass(hint):
            kwargs[f.name] = flat(hint, _pb_class(pb_cls, f.name))
        else:
            kwargs[f.name] = _SCALARS[fd.type]
    if "spec" in kwargs and "network" in kwargs:  # a model is a GLM or a network
        glm = {**kwargs, "spec": training_jobs(), "network": st.none()}
        return st.builds(cls, **glm) | st.builds(
            cls, **{**glm, "spec": st.none(), "network": network_jobs()}
        )
    return st.builds(cls, **kwargs)


NODE_STATS = flat(m.NodeStats, common_pb2.NodeStats)
STATS = st.lists(NODE_STATS, max_size=3).map(tuple)
PROGRESS_EVENTS = st.builds(
    m.ProgressEvent,
    stage=st.sampled_from(m.Stage),
    seconds=FINITE,
    iteration=U32,
    iterations=U32,
    index=U32,
    count=U32,
    nodes=STATS,
    summary=st.none() | flat(m.IterationSummary, query_pb2.IterationSummary),
    round=st.none() | flat(m.RoundSummary, query_pb2.RoundSummary),
)


# -- comparing domain messages (numpy arrays have no plain ==) -----------------------------------
def assert_same(got: Any, want: Any, where: str = "message") -> None:
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert got.dtype == np.float64 and np.array_equal(got, want), f"{where}: {got} != {want}"
    elif dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            assert_same(getattr(got, f.name), getattr(want, f.name), f"{where}.{f.name}")
    elif isinstance(want, tuple):
        assert len(got) == len(want), f"{where}: {len(got)} items != {len(want)}"
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def through_wire(msg: PbMessage, convert: Any) -> Any:
    """Serialize, then parse back as the receiver does (bytes -> proto -> domain)."""
    return serde.parse(type(msg), msg.SerializeToString(), convert)


# -- every message in a table, every table mirrored by the protos --------------------------------
ENVELOPES_AND_NESTED = {
    m.NodeStats,
    m.NodeStatus,
    m.Standardization,
    m.IterationSummary,
    m.ProgressEvent,
    m.Failure,
    m.TreeRequest,
    m.TreeResponse,
    m.Hello,
    m.Welcome,
    m.JobRequest,
    m.JobInfo,  # a job's record: in Accepted, WatchResult, ListJobsResult, CancelResult
    m.Accepted,  # the JobReply body ``accepted``
    m.ModelSummary,  # in ListModelsResult
    m.Matrix,  # a network's layer, in ModelWeightsResult
    m.NodeCiphertexts,  # one node's ciphertexts, in NetworkMapRequest and its response
    m.DataSchema,  # in StatusResult, TrainResult, ModelInfoResult
    m.Transform,  # in DataSchema
    m.RoundSummary,  # in ProgressEvent and FedAvgResult
}


def test_every_message_class_is_in_a_serde_table() -> None:
    defined = {
        cls
        for cls in vars(m).values()
        if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == m.__name__
    }
    in_tables = {cls for pair in [*serde._STEPS.values(), *serde._JOBS.values()] for cls in pair}
    forgotten = defined - in_tables - ENVELOPES_AND_NESTED
    assert not forgotten, f"add to serde._STEPS/_JOBS (and these tests): {forgotten}"
    requests = {req for req, _ in serde._STEPS.values()}
    responses = {resp for _, resp in serde._STEPS.values()}
    assert set(typing.get_args(m.TreeStep)) == requests
    assert set(typing.get_args(m.TreeResult)) == responses | {m.Failure}
    assert set(typing.get_args(m.Job)) == {job for job, _ in serde._JOBS.values()}
    assert set(typing.get_args(m.JobResult)) == {res for _, res in serde._JOBS.values()}
    assert len(requests | responses) == 2 * len(serde._STEPS)  # no class serves two steps


def _oneof(pb_cls: type[PbMessage], group: str) -> dict[str, int]:
    return {f.name: f.number for f in pb_cls.DESCRIPTOR.oneofs_by_name[group].fields}


def test_tables_match_the_proto_oneofs_name_and_number() -> None:
    steps, results = _oneof(tree_pb2.TreeRequest, "step"), _oneof(tree_pb2.TreeResponse, "result")
    assert list(steps) == list(serde._STEPS)  # same names, in proto field order
    assert {n: results[n] for n in steps} == steps  # a response has its request's number
    assert set(results) - set(steps) == {"error"}
    jobs, job_results = _oneof(query_pb2.JobRequest, "job"), _oneof(query_pb2.JobResult, "result")
    assert list(jobs) == list(serde._JOBS)
    assert job_results == jobs


def _domain_proto_pairs() -> list[Any]:
    pairs: list[tuple[type[Any], type[PbMessage]]] = [
        (m.NodeStats, common_pb2.NodeStats),
        (m.NodeStatus, common_pb2.NodeStatus),
        (m.Failure, common_pb2.Error),
        (m.Standardization, ml_pb2.Standardization),
        (TrainingJob, ml_pb2.GlmJobSpec),
        (m.IterationSummary, query_pb2.IterationSummary),
        (m.ProgressEvent, query_pb2.ProgressEvent),
        (m.Hello, tree_pb2.Hello),
        (m.Welcome, tree_pb2.Welcome),
        (m.JobInfo, query_pb2.JobInfo),
        (m.ModelSummary, query_pb2.ModelSummary),
        (m.RoundSummary, query_pb2.RoundSummary),
        (FedAvgSpec, ml_pb2.FedAvgSpec),
        (m.TensorSpec, ml_pb2.TensorSpec),
    ]
    for name, (req, resp) in serde._STEPS.items():
        pairs += [(req, _pb_class(tree_pb2.TreeRequest, name))]
        pairs += [(resp, _pb_class(tree_pb2.TreeResponse, name))]
    for name, (job, res) in serde._JOBS.items():
        pairs += [(job, _pb_class(query_pb2.JobRequest, name))]
        pairs += [(res, _pb_class(query_pb2.JobResult, name))]
    return [pytest.param(c, p, id=c.__name__) for c, p in pairs]


@pytest.mark.parametrize(("cls", "pb_cls"), _domain_proto_pairs())
def test_domain_fields_mirror_proto_fields(cls: type[Any], pb_cls: type[PbMessage]) -> None:
    assert {f.name for f in dataclasses.fields(cls)} == set(pb_cls.DESCRIPTOR.fields_by_name)


def _plain_fields(pb_cls: type[PbMessage]) -> set[str]:
    """The fields of a proto message outside its oneofs."""
    return {f.name for f in pb_cls.DESCRIPTOR.fields if f.containing_oneof is None}


@pytest.mark.parametrize(
    ("cls", "pb_cls", "oneof", "field"),
    [
        (m.TreeRequest, tree_pb2.TreeRequest, "step", "step"),
        (m.TreeResponse, tree_pb2.TreeResponse, "result", "result"),
        (m.JobRequest, query_pb2.JobRequest, "job", "job"),
    ],
    ids=["TreeRequest", "TreeResponse", "JobRequest"],
)
def test_envelope_fields_mirror_proto_fields(
    cls: type[Any], pb_cls: type[PbMessage], oneof: str, field: str
) -> None:
    """An envelope is its proto's plain fields (job_kind, detach included) plus its oneof."""
    assert oneof in pb_cls.DESCRIPTOR.oneofs_by_name
    assert {f.name for f in dataclasses.fields(cls)} == _plain_fields(pb_cls) | {field}


def test_accepted_is_the_job_replys_accepted_job_info() -> None:
    (only,) = dataclasses.fields(m.Accepted)
    assert typing.get_type_hints(m.Accepted, vars(m))[only.name] is m.JobInfo
    accepted = query_pb2.JobReply.DESCRIPTOR.fields_by_name["accepted"]
    assert accepted.containing_oneof.name == "body"
    assert accepted.message_type is query_pb2.JobInfo.DESCRIPTOR
    assert set(_oneof(query_pb2.JobReply, "body")) == {"event", "result", "accepted"}


def test_enums_match_the_proto_enums() -> None:
    assert {s.name for s in m.Stage} == set(query_pb2.Stage.keys()) - {"STAGE_UNSPECIFIED"}
    assert {"WAITING_FOR_NODES", "RESUMED"} <= {s.name for s in m.Stage}
    purposes = set(tree_pb2.KeySwitchRequest.Purpose.keys())
    assert {p.name for p in m.Purpose} == purposes - {"PURPOSE_UNSPECIFIED"}
    codes = {name for _, name in STATUS_TABLE} | {"INTERNAL"}
    assert "CANCELLED" in codes  # a cancelled job's failure, as a node reports it
    assert codes <= set(common_pb2.Error.Code.keys())  # every failure a node reports encodes


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(serde._STEPS))
@PROPERTY
@given(data=st.data())
def test_every_tree_step_request_roundtrips(name: str, data: st.DataObject) -> None:
    req_cls = serde._STEPS[name][0]
    step = data.draw(flat(req_cls, _pb_class(tree_pb2.TreeRequest, name)), label="step")
    request = m.TreeRequest(
        data.draw(TEXT), data.draw(TEXT), data.draw(U32), step, data.draw(FINITE), data.draw(TEXT)
    )
    pb = serde.parent_message_to_proto(request)
    assert pb.request.WhichOneof("step") == name
    assert pb.request.job_kind == request.job_kind
    assert_same(through_wire(pb, serde.parent_message_from_proto), request)
    assert_same(serde.tree_request_from_proto(serde.tree_request_to_proto(request)), request)


@pytest.mark.parametrize("name", list(serde._STEPS))
@PROPERTY
@given(data=st.data())
def test_every_tree_step_response_roundtrips_with_stats(name: str, data: st.DataObject) -> None:
    resp_cls = serde._STEPS[name][1]
    result = data.draw(flat(resp_cls, _pb_class(tree_pb2.TreeResponse, name)), label="result")
    response = m.TreeResponse(result, data.draw(STATS, label="stats"))
    pb = serde.child_message_to_proto(response)
    assert pb.response.WhichOneof("result") == name
    assert_same(through_wire(pb, serde.child_message_from_proto), response)
    assert_same(serde.tree_response_from_proto(serde.tree_response_to_proto(response)), response)
    stored = serde.tree_response_bytes(response)  # as the state store keeps an answer
    assert stored == serde.tree_response_to_proto(response).SerializeToString()
    assert_same(serde.read_tree_response(stored), response)


@PROPERTY
@given(
    code=st.sampled_from(sorted(common_pb2.Error.Code.keys())),
    message=st.text(max_size=40),
    stats=STATS,
)
def test_failure_roundtrips_as_an_error(code: str, message: str, stats: Any) -> None:
    response = m.TreeResponse(m.Failure(code, message), stats)
    pb = serde.child_message_to_proto(response)
    assert pb.response.WhichOneof("result") == "error"
    assert_same(through_wire(pb, serde.child_message_from_proto), response)


@PROPERTY
@given(
    hello=flat(m.Hello, tree_pb2.Hello),
    welcome=flat(m.Welcome, tree_pb2.Welcome),
)
def test_hello_and_welcome_roundtrip(hello: m.Hello, welcome: m.Welcome) -> None:
    pb_hello = serde.child_message_to_proto(hello)
    assert pb_hello.WhichOneof("body") == "hello"
    assert_same(through_wire(pb_hello, serde.child_message_from_proto), hello)
    pb_welcome = serde.parent_message_to_proto(welcome)
    assert pb_welcome.WhichOneof("body") == "welcome"
    assert_same(through_wire(pb_welcome, serde.parent_message_from_proto), welcome)


@pytest.mark.parametrize("name", list(serde._JOBS))
@PROPERTY
@given(data=st.data())
def test_every_querier_job_roundtrips(name: str, data: st.DataObject) -> None:
    job = data.draw(flat(serde._JOBS[name][0], _pb_class(query_pb2.JobRequest, name)), label="job")
    request = m.JobRequest(data.draw(TEXT), data.draw(TEXT), job, data.draw(st.booleans()))
    pb = serde.job_request_to_proto(request)
    assert pb.WhichOneof("job") == name and pb.detach == request.detach
    assert_same(through_wire(pb, serde.job_request_from_proto), request)
    stored = serde.job_request_bytes(request)  # as the root keeps a submitted job
    assert_same(serde.read_job_request(stored), request)


@pytest.mark.parametrize("name", list(serde._JOBS))
@PROPERTY
@given(data=st.data())
def test_every_job_result_roundtrips(name: str, data: st.DataObject) -> None:
    res_cls = serde._JOBS[name][1]
    result = data.draw(flat(res_cls, _pb_class(query_pb2.JobResult, name)), label="result")
    pb = serde.job_reply_to_proto(result)
    assert pb.WhichOneof("body") == "result" and pb.result.WhichOneof("result") == name
    assert_same(through_wire(pb, serde.job_reply_from_proto), result)
    stored = serde.job_result_bytes(result)  # as the root keeps a job's result
    assert stored == pb.SerializeToString()
    assert_same(serde.read_job_reply(stored), result)


@PROPERTY
@given(info=flat(m.JobInfo, query_pb2.JobInfo))
def test_accepted_roundtrips_as_the_replys_accepted_body(info: m.JobInfo) -> None:
    accepted = m.Accepted(info)
    pb = serde.job_reply_to_proto(accepted)
    assert pb.WhichOneof("body") == "accepted" and pb.accepted.job_id == info.job_id
    assert_same(through_wire(pb, serde.job_reply_from_proto), accepted)


def test_job_control_results_carry_their_nested_records() -> None:
    done = m.JobInfo("job-1", "train", "alice", "done", 1.5, 2.5, "", 7, 1)
    failed = m.JobInfo("job-2", "stats", "alice", "failed", 3.0, 4.0, "node-3 refused")
    summary = m.ModelSummary("job-1", TrainingJob(4, iterations=7), "alice", 2.5, (3, 6))
    results = [
        m.WatchResult(done),
        m.CancelResult(failed),
        m.ListJobsResult((done, failed)),
        m.ListJobsResult(()),
        m.ListModelsResult((summary, dataclasses.replace(summary, model_id="job-9", refreshes=()))),
    ]
    for result in results:
        got = through_wire(serde.job_reply_to_proto(result), serde.job_reply_from_proto)
        assert got == result
    pb = serde.job_reply_to_proto(results[2])
    assert [j.state for j in pb.result.list_jobs.jobs] == ["done", "failed"]
    assert pb.result.list_jobs.jobs[0].iterations_done == 7
    pb = serde.job_reply_to_proto(results[4])
    assert pb.result.list_models.models[0].spec.iterations == 7
    assert list(pb.result.list_models.models[0].refreshes) == [3, 6]


@PROPERTY
@given(event=PROGRESS_EVENTS)
def test_progress_event_roundtrips(event: m.ProgressEvent) -> None:
    pb = serde.job_reply_to_proto(event)
    assert pb.WhichOneof("body") == "event"
    assert pb.event.HasField("summary") == (event.summary is not None)
    assert_same(through_wire(pb, serde.job_reply_from_proto), event)


def test_progress_event_with_and_without_summary_and_nodes() -> None:
    bare = m.ProgressEvent(m.Stage.KEYGEN_DONE)
    got = through_wire(serde.job_reply_to_proto(bare), serde.job_reply_from_proto)
    assert got == bare and got.summary is None and got.nodes == ()
    stats = m.NodeStats("node-3", 0.5, 42, combine_seconds=0.25, parent_id="node-1")
    full = m.ProgressEvent(
        m.Stage.ITERATION_DONE,
        seconds=1.5,
        iteration=2,
        iterations=5,
        index=1,
        count=1,
        nodes=(stats, m.NodeStats("node-1", 0.1, 7)),
        summary=m.IterationSummary(refreshes=1, levels_left=3, levels_sent=2, levels_dropped=1),
    )
    got = through_wire(serde.job_reply_to_proto(full), serde.job_reply_from_proto)
    assert got == full and got.summary.levels_dropped == 1 and got.nodes[0] == stats


@PROPERTY
@given(job=training_jobs())
def test_glm_job_roundtrips(job: TrainingJob) -> None:
    assert_same(through_wire(serde.glm_job_to_proto(job), serde.glm_job_from_proto), job)


@PROPERTY
@given(s=standardizations())
def test_standardization_roundtrips(s: m.Standardization) -> None:
    got = through_wire(serde.standardization_to_proto(s), serde.standardization_from_proto)
    assert_same(got, s)


def test_node_stats_keep_every_field_and_absent_fields_read_as_zero() -> None:
    full = m.NodeStats(
        "node-1",
        0.5,
        42,
        combine_seconds=0.25,
        serialize_seconds=0.01,
        subtree_seconds=1.5,
        bytes_from_parent=1000,
        bytes_from_children=84,
        bytes_to_children=2000,
        parent_id="node-0",
    )
    assert serde.node_stats_from_proto(serde.node_stats_to_proto(full)) == full
    assert full.work_seconds == 0.5 + 0.25 + 0.01
    assert full.bytes_received == 1000 + 84
    sparse = common_pb2.NodeStats(node_id="n", seconds=1.0, bytes_sent=7)
    got = serde.node_stats_from_proto(common_pb2.NodeStats.FromString(sparse.SerializeToString()))
    assert got == m.NodeStats("n", 1.0, 7)
    assert got.parent_id == "" and got.bytes_received == 0 and got.work_seconds == 1.0


# -- refusals ----------------------------------------------------------------------------------
def _spec(**changes: Any) -> ml_pb2.GlmJobSpec:
    spec = serde.glm_job_to_proto(TrainingJob(4))
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def _std(mean: list[float], std: list[float]) -> ml_pb2.Standardization:
    return ml_pb2.Standardization(mean=mean, std=std)


def _prepare(**kw: Any) -> tree_pb2.TreeRequest:
    return tree_pb2.TreeRequest(job_id="j", prepare_training=tree_pb2.PrepareTrainingRequest(**kw))


REFUSED = [
    pytest.param(
        tree_pb2.TreeRequest(job_id="j", params="p"),
        serde.tree_request_from_proto,
        r"TreeRequest carries no step",
        id="tree-request-empty-oneof",
    ),
    pytest.param(
        tree_pb2.TreeResponse(stats=[common_pb2.NodeStats(node_id="n")]),
        serde.tree_response_from_proto,
        r"TreeResponse carries no result",
        id="tree-response-empty-oneof",
    ),
    pytest.param(
        tree_pb2.ChildMessage(),
        serde.child_message_from_proto,
        r"empty message from a child",
        id="child-message-empty",
    ),
    pytest.param(
        tree_pb2.ParentMessage(),
        serde.parent_message_from_proto,
        r"empty message from the parent",
        id="parent-message-empty",
    ),
    pytest.param(
        tree_pb2.ParentMessage(request=tree_pb2.TreeRequest(job_id="j")),
        serde.parent_message_from_proto,
        r"TreeRequest carries no step",
        id="parent-request-empty-oneof",
    ),
    pytest.param(
        query_pb2.JobRequest(job_id="j"),
        serde.job_request_from_proto,
        r"JobRequest carries no job",
        id="job-request-empty-oneof",
    ),
    pytest.param(
        query_pb2.JobReply(),
        serde.job_reply_from_proto,
        r"empty reply from the root",
        id="job-reply-empty",
    ),
    pytest.param(
        query_pb2.JobReply(result=query_pb2.JobResult()),
        serde.job_reply_from_proto,
        r"JobResult carries no result",
        id="job-result-empty-oneof",
    ),
    pytest.param(
        tree_pb2.TreeRequest(key_switch=tree_pb2.KeySwitchRequest(querier="q")),
        serde.tree_request_from_proto,
        r"unknown key-switch purpose 'PURPOSE_UNSPECIFIED'",
        id="purpose-unspecified",
    ),
    pytest.param(
        tree_pb2.TreeRequest(key_switch=tree_pb2.KeySwitchRequest(purpose=7)),
        serde.tree_request_from_proto,
        r"invalid TreeRequest: .*Purpose.*7",
        id="purpose-out-of-range",
    ),
    pytest.param(
        query_pb2.JobReply(event=query_pb2.ProgressEvent(seconds=1.0)),
        serde.job_reply_from_proto,
        r"unknown progress stage 'STAGE_UNSPECIFIED'",
        id="stage-unspecified",
    ),
    pytest.param(
        tree_pb2.TreeResponse(error=common_pb2.Error(code=42, message="x")),
        serde.tree_response_from_proto,
        r"invalid TreeResponse: .*Code.*42",
        id="error-code-out-of-range",
    ),
    pytest.param(
        _prepare(),
        serde.tree_request_from_proto,
        r"PrepareTrainingRequest lacks its job",
        id="prepare-without-job",
    ),
    pytest.param(
        query_pb2.JobRequest(job_id="j", train=query_pb2.TrainJob(standardize=True)),
        serde.job_request_from_proto,
        r"TrainJob lacks its spec",
        id="train-without-spec",
    ),
    pytest.param(
        query_pb2.JobRequest(job_id="j", train_network=query_pb2.TrainNetworkJob()),
        serde.job_request_from_proto,
        r"TrainNetworkJob lacks its spec",
        id="train-network-without-spec",
    ),
    pytest.param(
        query_pb2.JobReply(result=query_pb2.JobResult(model_info=query_pb2.ModelInfoResult())),
        serde.job_reply_from_proto,
        r"ModelInfoResult lacks its spec",
        id="model-info-without-spec",
    ),
    pytest.param(
        _std([0.0, 1.0], [1.0, 0.0]),
        serde.standardization_from_proto,
        r"finite means as finite positive deviations",
        id="standardization-zero-std",
    ),
    pytest.param(
        _std([0.0], [-1.0]),
        serde.standardization_from_proto,
        r"finite means as finite positive deviations",
        id="standardization-negative-std",
    ),
    pytest.param(
        _std([0.0, 1.0], [1.0]),
        serde.standardization_from_proto,
        r"got 2 means and 1 deviations",
        id="standardization-lengths",
    ),
    pytest.param(
        _std([math.nan], [1.0]),
        serde.standardization_from_proto,
        r"finite means",
        id="standardization-nan-mean",
    ),
    pytest.param(
        _prepare(job=_spec(), standardization=_std([0.0, 0.0], [1.0, 0.0])),
        serde.tree_request_from_proto,
        r"positive deviations",
        id="prepare-zero-std",
    ),
    pytest.param(
        query_pb2.JobReply(
            result=query_pb2.JobResult(
                train=query_pb2.TrainResult(model_id="m", standardization=_std([0.0, 1.0], [1.0]))
            )
        ),
        serde.job_reply_from_proto,
        r"got 2 means and 1 deviations",
        id="train-result-std-lengths",
    ),
    pytest.param(
        query_pb2.JobReply(result=query_pb2.JobResult(watch=query_pb2.WatchResult())),
        serde.job_reply_from_proto,
        r"WatchResult lacks its job",
        id="watch-result-without-job",
    ),
    pytest.param(
        query_pb2.JobReply(result=query_pb2.JobResult(cancel=query_pb2.CancelResult())),
        serde.job_reply_from_proto,
        r"CancelResult lacks its job",
        id="cancel-result-without-job",
    ),
    pytest.param(
        query_pb2.JobReply(
            result=query_pb2.JobResult(
                list_models=query_pb2.ListModelsResult(
                    models=[
                        query_pb2.ModelSummary(model_id="m", spec=_spec()),
                        query_pb2.ModelSummary(model_id="x"),
                    ]
                )
            )
        ),
        serde.job_reply_from_proto,
        r"ModelSummary lacks its spec",
        id="model-summary-without-spec",
    ),
    pytest.param(
        query_pb2.JobReply(event=query_pb2.ProgressEvent(stage=99)),
        serde.job_reply_from_proto,
        r"invalid JobReply: .*Stage.*99",
        id="stage-out-of-range",
    ),
]


@pytest.mark.parametrize(("msg", "convert", "match"), REFUSED)
def test_malformed_messages_are_refused_by_name(msg: PbMessage, convert: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        through_wire(msg, convert)


@pytest.mark.parametrize(
    ("pb_cls", "data"),
    [
        (tree_pb2.TreeRequest, b"\x0a\x05ab"),  # length-delimited field cut short
        (tree_pb2.ChildMessage, b"\xff"),  # a truncated varint tag
        (query_pb2.JobRequest, b"\x08"),  # a tag with no value
        (common_pb2.Frame, b"\x1a\x80\x80\x80\x80\x10"),  # an absurd length
    ],
    ids=["cut-short", "bad-tag", "no-value", "absurd-length"],
)
def test_malformed_bytes_are_refused(pb_cls: type[PbMessage], data: bytes) -> None:
    with pytest.raises(ProtocolError, match=rf"malformed {pb_cls.__name__}"):
        serde.parse(pb_cls, data, lambda msg: msg)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_features", 0),
        ("model", "probit"),
        ("learning_rate", 0.0),
        ("learning_rate", math.nan),
        ("momentum", 1.0),
        ("batch_size", 0),
        ("activation_method", "newton"),
        ("params", "n99"),
        ("activation_degree", 0),
        ("activation_bound", 0.0),
        ("activation_bound", math.inf),
    ],
)
def test_invalid_glm_job_spec_is_refused_naming_the_field(field: str, value: Any) -> None:
    spec = _spec(**{field: value})
    match = rf"training job: {field}"
    with pytest.raises(ParameterError, match=match):
        through_wire(spec, serde.glm_job_from_proto)
    train = query_pb2.JobRequest(job_id="j", train=query_pb2.TrainJob(spec=spec))
    with pytest.raises(ParameterError, match=match):  # a domain error is not rewrapped
        through_wire(train, serde.job_request_from_proto)
    with pytest.raises(ParameterError, match=match):
        through_wire(_prepare(job=spec), serde.tree_request_from_proto)
    summary = query_pb2.ModelSummary(model_id="m", spec=spec)
    listed = query_pb2.JobReply(
        result=query_pb2.JobResult(list_models=query_pb2.ListModelsResult(models=[summary]))
    )
    with pytest.raises(ParameterError, match=match):  # nested in a tuple of messages, too
        through_wire(listed, serde.job_reply_from_proto)
    with pytest.raises(ParameterError, match=match):  # and from the state store's bytes
        serde.read_job_request(train.SerializeToString())


def test_a_job_that_does_not_fit_its_parameter_set_is_refused() -> None:
    spec = _spec(params="n14-depth5-128", activation_degree=3)
    with pytest.raises(
        ParameterError, match=r"one iteration needs 3 levels.*'n14-depth5-128'.*activation_degree"
    ):
        through_wire(spec, serde.glm_job_from_proto)


def test_a_message_in_the_wrong_place_is_refused() -> None:
    answer = m.TreeRequest("j", "p", 3, m.PingResponse(()))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"PingResponse is not a message of TreeRequest"):
        serde.tree_request_to_proto(answer)
    with pytest.raises(ProtocolError, match=r"PingRequest is not a message of TreeResponse"):
        serde.tree_response_to_proto(m.TreeResponse(m.PingRequest()))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"SetupResult is not a message of JobRequest"):
        serde.job_request_to_proto(m.JobRequest("j", "p", m.SetupResult("k")))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"SetupJob is not a message of JobResult"):
        serde.job_reply_to_proto(m.SetupJob())  # type: ignore[arg-type]
    info = m.JobInfo("j", "stats", "q", "queued")
    with pytest.raises(ProtocolError, match=r"Accepted is not a message of JobRequest"):
        serde.job_request_to_proto(m.JobRequest("j", "p", m.Accepted(info)))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"JobInfo is not a message of JobResult"):
        serde.job_reply_to_proto(info)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"WatchJob is not a message of JobResult"):
        serde.job_result_bytes(m.WatchJob("j"))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"PingRequest is not a message of TreeResponse"):
        serde.tree_response_bytes(m.TreeResponse(m.PingRequest()))  # type: ignore[arg-type]


# -- framing -----------------------------------------------------------------------------------
def _frame(call_id: int, total_size: int, data: bytes) -> common_pb2.Frame:
    return common_pb2.Frame(call_id=call_id, total_size=total_size, data=data)


def test_a_message_larger_than_three_chunks_reassembles() -> None:
    queries = (os.urandom(CHUNK), os.urandom(CHUNK), os.urandom(CHUNK), b"tail" * 5)
    request = m.JobRequest("job-1", "n14-depth5-128", m.PredictJob("model-1", b"qk", queries))
    msg = serde.job_request_to_proto(request)
    size = msg.ByteSize()
    frames = list(to_frames(msg, call_id=7))
    assert size > 3 * CHUNK and len(frames) == math.ceil(size / CHUNK) >= 4
    assert all(f.call_id == 7 and f.total_size == size for f in frames)
    assert all(len(f.data) == CHUNK for f in frames[:-1]) and 0 < len(frames[-1].data) <= CHUNK
    reader = FrameReader()
    assert [reader.feed(f) for f in frames[:-1]] == [None] * (len(frames) - 1)
    assert reader.incomplete
    call, data = reader.feed(frames[-1]) or (None, b"")
    assert call == 7 and not reader.incomplete
    assert_same(serde.parse(query_pb2.JobRequest, data, serde.job_request_from_proto), request)


def test_an_empty_message_is_one_frame() -> None:
    (frame,) = to_frames(tree_pb2.PingRequest(), call_id=3)
    assert frame.total_size == 0 and frame.data == b""
    reader = FrameReader()
    assert reader.feed(frame) == (3, b"")
    assert not reader.incomplete
    status = serde.job_request_to_proto(m.JobRequest("", "", m.StatusJob()))
    assert status.ByteSize() > 0  # an empty job still names its kind on the wire
    assert len(list(to_frames(status))) == 1


@PROPERTY
@given(
    payloads=st.dictionaries(U64, st.binary(max_size=40), max_size=6),
    data=st.data(),
)
def test_interleaved_calls_reassemble(payloads: dict[int, bytes], data: st.DataObject) -> None:
    with mock.patch.object(serde, "CHUNK", 7):  # small chunks: many frames per message
        messages = {cid: tree_pb2.PublicKeyShareResponse(share=p) for cid, p in payloads.items()}
        streams = {cid: list(to_frames(msg, cid)) for cid, msg in messages.items()}
    for cid, frames in streams.items():
        size = messages[cid].ByteSize()
        assert len(frames) == max(1, math.ceil(size / 7))
        assert all(len(f.data) <= 7 and f.total_size == size for f in frames)
    order = data.draw(st.permutations([cid for cid, fs in streams.items() for _ in fs]))
    reader, done = FrameReader(), {}
    position = dict.fromkeys(streams, 0)
    for cid in order:
        frame = streams[cid][position[cid]]
        position[cid] += 1
        out = reader.feed(frame)
        assert (out is not None) == (position[cid] == len(streams[cid]))
        if out is not None:
            assert out[0] == cid and cid not in done
            done[out[0]] = out[1]
    assert done == {cid: msg.SerializeToString() for cid, msg in messages.items()}
    assert not reader.incomplete


def _step_messages(side: int) -> st.SearchStrategy[Any]:
    """Any tree step's request (side 0) or response (side 1), every field drawn."""
    owner = (tree_pb2.TreeRequest, tree_pb2.TreeResponse)[side]
    return st.one_of(
        [flat(pair[side], _pb_class(owner, name)) for name, pair in serde._STEPS.items()]
    )


def _job_messages(side: int) -> st.SearchStrategy[Any]:
    """Any querier job (side 0) or job result (side 1), every field drawn."""
    owner = (query_pb2.JobRequest, query_pb2.JobResult)[side]
    return st.one_of(
        [flat(pair[side], _pb_class(owner, name)) for name, pair in serde._JOBS.items()]
    )


FAILURES = st.builds(m.Failure, st.sampled_from(sorted(common_pb2.Error.Code.keys())), TEXT)
TREE_REQUESTS = st.builds(m.TreeRequest, TEXT, TEXT, U32, _step_messages(0), FINITE, TEXT)
TREE_RESPONSES = st.builds(m.TreeResponse, _step_messages(1) | FAILURES, STATS)
JOB_REQUESTS = st.builds(m.JobRequest, TEXT, TEXT, _job_messages(0), st.booleans())
ACCEPTED = st.builds(m.Accepted, flat(m.JobInfo, query_pb2.JobInfo))

# stream: (message strategy, to frames, read back, takes a call id)
STREAMS: dict[str, tuple[st.SearchStrategy[Any], Any, Any, bool]] = {
    "child": (
        flat(m.Hello, tree_pb2.Hello) | TREE_RESPONSES,
        serde.child_message_frames,
        serde.read_child_message,
        True,
    ),
    "child-answer": (  # an answer sent from the bytes the node keeps for retries
        TREE_RESPONSES,
        lambda r, call: serde.child_answer_frames(serde.tree_response_bytes(r), call),
        serde.read_child_message,
        True,
    ),
    "parent": (
        flat(m.Welcome, tree_pb2.Welcome) | TREE_REQUESTS,
        serde.parent_message_frames,
        serde.read_parent_message,
        True,
    ),
    "job-request": (JOB_REQUESTS, serde.job_request_frames, serde.read_job_request, False),
    "job-reply": (
        PROGRESS_EVENTS | ACCEPTED | _job_messages(1),
        serde.job_reply_frames,
        serde.read_job_reply,
        True,
    ),
}


@pytest.mark.parametrize("stream", list(STREAMS))
@PROPERTY
@given(data=st.data(), call_id=U64)
def test_each_stream_reassembles_from_its_frames(
    stream: str, data: st.DataObject, call_id: int
) -> None:
    messages, to_stream, read, takes_call_id = STREAMS[stream]
    msg = data.draw(messages, label="message")
    with mock.patch.object(serde, "CHUNK", 7):  # small chunks: many frames per message
        frames = list(to_stream(msg, call_id) if takes_call_id else to_stream(msg))
    size = frames[0].total_size
    assert len(frames) == max(1, math.ceil(size / 7))
    want_call = call_id if takes_call_id else 0
    assert all(f.call_id == want_call and f.total_size == size for f in frames)
    reader = FrameReader()
    outs = [reader.feed(f) for f in frames]
    assert outs[:-1] == [None] * (len(frames) - 1) and outs[-1] is not None
    call, body = outs[-1]
    assert call == want_call and len(body) == size and not reader.incomplete
    assert_same(read(body), msg)


@PROPERTY
@given(response=TREE_RESPONSES, call_id=U32)
def test_an_answer_sent_from_its_kept_bytes_is_the_message_a_child_sends(
    response: m.TreeResponse, call_id: int
) -> None:
    """A node serializes an answer once (for its state store) and frames those bytes
    behind the ChildMessage's field key: the parent receives exactly the message it would
    have received had the answer been serialized as a ChildMessage."""

    def joined(frames: Any) -> bytes:
        return b"".join(f.data for f in frames)

    kept = serde.tree_response_bytes(response)
    assert joined(serde.child_answer_frames(kept, call_id)) == joined(
        serde.child_message_frames(response, call_id)
    )


def test_a_large_answer_is_framed_in_chunks_without_a_copy_of_the_whole() -> None:
    shares = tuple(bytes([i]) * (CHUNK // 2 + i) for i in range(5))
    kept = serde.tree_response_bytes(m.TreeResponse(m.RefreshShareResponse(shares)))
    frames = list(serde.child_answer_frames(kept, 3))
    assert all(len(f.data) <= CHUNK for f in frames) and len(frames) == 3
    reader = FrameReader()
    call, body = [d for d in map(reader.feed, frames) if d is not None][0]
    assert call == 3 and serde.read_child_message(body) == m.TreeResponse(
        m.RefreshShareResponse(shares)
    )
    assert body == b"", "a reassembled message is consumed by reading it"


@pytest.mark.parametrize(
    ("read", "data", "match"),
    [
        (serde.read_child_message, b"", r"empty message from a child"),
        (serde.read_child_message, b"\xff", r"malformed ChildMessage"),
        (serde.read_parent_message, b"", r"empty message from the parent"),
        (serde.read_parent_message, b"\x0a\x05ab", r"malformed ParentMessage"),
        (serde.read_job_request, b"", r"JobRequest carries no job"),
        (serde.read_job_request, b"\x08", r"malformed JobRequest"),
        (serde.read_job_reply, b"", r"empty reply from the root"),
        (serde.read_job_reply, b"\x1a\x80\x80\x80\x80\x10", r"malformed JobReply"),
        (serde.read_tree_response, b"", r"TreeResponse carries no result"),
        (serde.read_tree_response, b"\xff", r"malformed TreeResponse"),
    ],
    ids=[
        "child-empty",
        "child-bad-tag",
        "parent-empty",
        "parent-cut-short",
        "job-request-empty",
        "job-request-no-value",
        "job-reply-empty",
        "job-reply-absurd-length",
        "tree-response-empty",
        "tree-response-bad-tag",
    ],
)
def test_stream_readers_refuse_malformed_bytes(read: Any, data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        read(data)


def test_a_stored_result_reads_back_as_a_result_not_an_event() -> None:
    """What the state store keeps for a job is a whole JobReply: the reader tells its kind."""
    result = m.StatsResult(b"sums")
    assert serde.read_job_reply(serde.job_result_bytes(result)) == result
    event = serde.job_reply_to_proto(m.ProgressEvent(m.Stage.RESUMED, iteration=3))
    got = serde.read_job_reply(event.SerializeToString())
    assert got == m.ProgressEvent(m.Stage.RESUMED, iteration=3)
    failure = m.TreeResponse(m.Failure("CANCELLED", "the job was cancelled"), ())
    assert serde.read_tree_response(serde.tree_response_bytes(failure)) == failure


def test_a_frame_disagreeing_with_its_calls_size_is_refused() -> None:
    reader = FrameReader()
    assert reader.feed(_frame(1, 10, b"abc")) is None
    assert reader.feed(_frame(2, 11, b"abc")) is None  # another call may differ
    with pytest.raises(ProtocolError, match=r"call 1: frame declares 11 bytes, its message 10"):
        reader.feed(_frame(1, 11, b"def"))


@pytest.mark.parametrize(
    "frames",
    [[_frame(1, 4, b"abc"), _frame(1, 4, b"de")], [_frame(1, 2, b"abc")], [_frame(1, 0, b"a")]],
    ids=["second-frame", "single-frame", "empty-message"],
)
def test_frames_overrunning_the_total_size_are_refused(frames: list[common_pb2.Frame]) -> None:
    reader = FrameReader()
    for frame in frames[:-1]:
        assert reader.feed(frame) is None
    with pytest.raises(ProtocolError, match=r"call 1: frames overrun the declared \d+ bytes"):
        reader.feed(frames[-1])


def test_a_message_above_the_readers_limit_is_refused() -> None:
    reader = FrameReader(max_message_bytes=100)
    assert reader.feed(_frame(1, 100, b"x" * 100)) == (1, b"x" * 100)  # at the limit: fine
    with pytest.raises(ProtocolError, match=r"message of 101 bytes exceeds the limit of 100"):
        reader.feed(_frame(2, 101, b"x"))
    assert not reader.incomplete  # nothing of the refused message was kept
    default = FrameReader()
    with pytest.raises(ProtocolError, match=r"exceeds the limit"):
        default.feed(_frame(3, serde.MAX_MESSAGE_BYTES + 1, b""))


def test_too_many_open_calls_are_refused() -> None:
    reader = FrameReader()
    for call in range(MAX_PENDING_MESSAGES):
        assert reader.feed(_frame(call, 2, b"a")) is None
    with pytest.raises(ProtocolError, match=rf"more than {MAX_PENDING_MESSAGES} messages open"):
        reader.feed(_frame(MAX_PENDING_MESSAGES, 2, b"a"))
    assert reader.feed(_frame(0, 2, b"b")) == (0, b"ab")  # an open call still completes
    assert reader.feed(_frame(MAX_PENDING_MESSAGES, 2, b"a")) is None  # and frees a place


def test_open_messages_cannot_together_declare_more_than_the_bound() -> None:
    """64 messages just under the limit each would buffer 64 times the largest message:
    what all open messages declare is bounded, and freed when one completes."""
    reader = FrameReader(max_message_bytes=100, max_open_bytes=150)
    assert reader.feed(_frame(1, 100, b"x")) is None
    with pytest.raises(ProtocolError, match=r"would declare 151 bytes; the limit is 150"):
        reader.feed(_frame(2, 51, b"x"))
    assert reader.feed(_frame(3, 50, b"y")) is None  # 150 in all: fine
    assert reader.feed(_frame(1, 100, b"x" * 99)) == (1, b"x" * 100)
    assert reader.feed(_frame(4, 100, b"z")) is None  # the completed one freed its bytes


def test_a_tree_stream_is_bounded_by_its_parameter_set() -> None:
    from phe_fl.mhe import INSECURE_TEST, N16_128, largest_message_bytes

    small = serde.tree_message_limit(INSECURE_TEST.name)
    assert small == largest_message_bytes(INSECURE_TEST) < serde.MAX_MESSAGE_BYTES
    assert serde.tree_message_limit(N16_128.name) == serde.MAX_MESSAGE_BYTES  # protobuf's cap


def test_generated_protobuf_code_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_infinite_deviation_is_refused() -> None:
    """std = inf would silently zero the feature for every node that applies it."""
    msg = ml_pb2.Standardization(mean=[0.0], std=[float("inf")])
    with pytest.raises(ProtocolError, match="finite positive deviations"):
        serde.standardization_from_proto(msg)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden", [4, 0]),
        ("n_classes", 1),
        ("hidden_degree", 9),
        ("hidden_activation", "tanh"),
        ("output_degree", 0),
        ("learning_rate", 0.0),
        ("batch_size", 0),
        ("params", "n99"),
    ],
)
def test_a_bad_network_job_is_refused_on_arrival_naming_its_field(field: str, value: Any) -> None:
    """What the root reads from a querier's bytes, before any work: the field named."""
    good = serde.network_job_to_proto(MLPJob(n_features=4, n_classes=3, hidden=(5,)))
    spec = ml_pb2.NetworkJobSpec()
    spec.CopyFrom(good)
    if field == "hidden":
        del spec.hidden[:]
        spec.hidden.extend(value)
    else:
        setattr(spec, field, value)
    msg = query_pb2.JobRequest(job_id="j", train_network=query_pb2.TrainNetworkJob(spec=spec))
    with pytest.raises(ParameterError, match=rf"network job: {field}\b"):
        through_wire(msg, serde.job_request_from_proto)
