"""The querier's whole transcript of a prediction job, over real node processes, decodes
to its predictions and nothing else: typed progress events without payloads, then one
score ciphertext per query ciphertext, switched to the querier's key, whose slots hold
the scores and zeros (the score mask): no model coefficient is recoverable from it
beyond what the predictions imply."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from phe_fl.federation import messages as m
from phe_fl.federation.config import DataSource
from phe_fl.federation.data import load_local_data
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.federation.serde import FrameReader, job_request_frames, read_job_reply
from phe_fl.federation.tree import open_channel
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import TrainingJob
from phe_fl.ml.glm import design_matrix
from phe_fl.ml.glm.prediction import encrypt_queries
from phe_fl.v2 import query_pb2_grpc

N = 3
JOB = TrainingJob(
    n_features=30,
    params=INSECURE_TEST.name,
    iterations=3,
    learning_rate=0.3,
    activation_degree=3,
    activation_bound=8.0,
    allow_model_decryption=True,
)


def _payload_fields(obj: object, path: str = "") -> list[str]:
    """Every bytes field, at any depth, of a domain message."""
    found = []
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            found += _payload_fields(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, tuple):
        for i, v in enumerate(obj):
            found += _payload_fields(v, f"{path}[{i}]")
    elif isinstance(obj, bytes | bytearray):
        found.append(path)
    return found


def test_a_prediction_transcript_holds_the_predictions_and_nothing_else(tmp_path: Path) -> None:
    x = load_local_data(DataSource("breast_cancer", None, 0, 1))[0][:150]
    with LocalCluster(tmp_path, n_nodes=N, params=INSECURE_TEST.name, allow_decryption=True) as c:
        q = Querier(c.root_address, c.querier_tls(), deadline_s=60)
        q.setup("keys")
        run = q.train("model", JOB)
        weights = q.model_weights("weights", "model")  # consented: to check the claim
        queries = encrypt_queries(JOB, q.ctx, run.standardize(x), q.joint_key("key"))
        request = m.JobRequest(
            "predict-recorded",
            q.ctx.params.name,
            m.PredictJob(
                "model", q.keys.public_key.to_bytes(), tuple(c.to_bytes() for c in queries)
            ),
        )
        channel = open_channel(c.root_address, c.querier_tls())
        frames = list(
            query_pb2_grpc.RootStub(channel).Submit(job_request_frames(request), timeout=60)
        )
        channel.close()
        reader, replies, received = FrameReader(), [], 0
        for frame in frames:
            received += len(frame.data)
            done = reader.feed(frame)
            if done is not None:
                replies.append(read_job_reply(done[1]))
        keys, ctx = q.keys, q.ctx
        q.close()

    kinds = [type(r) for r in replies]
    assert kinds[0] is m.Accepted and kinds[-1] is m.PredictResult
    assert set(kinds[1:-1]) <= {m.ProgressEvent}
    for r in replies[:-1]:
        assert _payload_fields(r) == [], r  # events and the job record carry no payload
    result = replies[-1]
    assert isinstance(result, m.PredictResult)
    assert _payload_fields(result) == [f".scores[{i}]" for i in range(len(queries))]
    assert received - sum(len(s) for s in result.scores) < 64 * 1024  # nothing else of size

    layout = JOB.layout
    slots = [keys.decrypt(ctx.ciphertext_from_bytes(s), decimals=8) for s in result.scores]
    expected = np.clip(JOB.activation(design_matrix(JOB, run.standardize(x)) @ weights), 0, 1)
    scores = np.concatenate(
        [
            np.asarray(v)[:: layout.block][: len(x) - i * layout.samples_per_ct]
            for i, v in enumerate(slots)
        ]
    )[: len(x)]
    assert np.abs(np.clip(scores, 0, 1) - expected).max() < 2e-3  # the predictions...
    for i, v in enumerate(slots):  # ...and zeros everywhere else: no weight, no margin
        rest = np.asarray(v).copy()
        rest[:: layout.block] = 0.0
        assert np.abs(rest).max() < 1e-3, (i, np.abs(rest).max())
