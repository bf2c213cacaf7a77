"""Multilayer perceptrons and multinomial logistic regression trained with the model kept
encrypted (MAP-COMBINE-REDUCE), their plaintext twin, and oblivious prediction.

The network is ``units = (d, h_1, ..., h_H, c)`` with 0 to 3 hidden layers: with no
hidden layer it is multinomial logistic regression. Every layer has a bias (a constant-1
input unit). Hidden units use a polynomial fitted to ReLU (or the sigmoid) on a declared
interval; the output uses the fitted sigmoid per class with the cross-entropy gradient
``sigma(z) - onehot(y)``, the standard HE substitute for softmax (it needs neither
``exp`` nor a division, and argmax of the scores is the prediction). Slots are laid out by
:class:`~phe_fl.ml.mlp_layout.MLPLayout` (alternating packing, no transposes).

One iteration, with ``eta = learning_rate / global_batch``:

* MAP (each party, per chunk of its plaintext batch): forward ``z_k = W_k a_{k-1}``,
  ``a_k = g(z_k)`` (mask folded into ``g``'s coefficients) and ``g'(z_k)``; output error
  ``e_L = eta * (sigma(z_L) - y)``; backward ``U_k = e_k a_{k-1}^T``,
  ``e_{k-1} = (W_k^T e_k) * g'(z_{k-1})``. The party returns its ``U_k``, summed over its
  chunks but not over the samples of a chunk;
* COMBINE: the parties' ``U_k`` are added, layer by layer;
* REDUCE (root): all-reduce over samples, ``W_k <- W_k - G_k`` (optional momentum as in
  :mod:`phe_fl.ml.glm`).

Depth: a hidden layer costs 3 levels forward (product, degree-2 activation) and 3
backward (product, mask, ``g'``), far more than the 8 usable levels of the 2^15 set for
two or more hidden layers. As in POSEIDON, an intermediate ciphertext (activations or
errors, still under the joint key) is refreshed collectively whenever the next operation
would leave it unrefreshable. A party cannot start a collective protocol itself (only
the root asks the tree), so MAP runs in stages (:mod:`phe_fl.ml.staging`): each party
pauses where its chunks need refreshes and answers with those intermediates; the root
refreshes every party's at once in one round and sends them back. The root refreshes
the weights once per iteration. Refreshes and refresh rounds are reported per iteration.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.mhe.keys import QuerierKeyPair
from phe_fl.mhe.params import ParameterSet, get_parameter_set
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.ml.activations import (
    FitMethod,
    PolyActivation,
    fit_activation,
    fit_sigmoid,
    sigmoid,
)
from phe_fl.ml.federation import (
    LayersFederation,
    LayersMapRequest,
    LocalTrainingFederation,
)
from phe_fl.ml.glm import batch_rows, log
from phe_fl.ml.job import (
    DEFAULT_PARAMS,
    Shard,
    ShardWorker,
    check_common_fields,
    is_int,
    is_real,
    require_job_params,
    validate_shard,
    validate_shards,
)
from phe_fl.ml.mlp_layout import MLPLayout
from phe_fl.ml.packing import chunks
from phe_fl.ml.staging import Levels, Lockstep, Refreshing, RefreshMany, layer_sums, run_alone

__all__ = [
    "HiddenActivation",
    "MLPJob",
    "MLPParty",
    "MLPIterationReport",
    "EncryptedMLP",
    "MLPTrainer",
    "MLPPlaintextResult",
    "train_plaintext_mlp",
    "mlp_scores",
    "mlp_predict",
    "setup_local_mlp",
    "encrypt_mlp_queries",
    "evaluate_mlp",
    "decode_mlp_scores",
    "predict_local_mlp",
    "with_levels",
    "prediction_levels",
]

HiddenActivation = Literal["relu", "sigmoid"]

MAX_HIDDEN_LAYERS = 3
MAX_WEIGHT_CIPHERTEXTS = 1024
"""A network's weight tiles at most (784-64-64-10 at 2^15 is 9; 784-512-512-10 is 53)."""


def _relu(x: FloatArray) -> FloatArray:
    return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


@dataclass(frozen=True)
class MLPJob:
    """Everything the parties agree on before training a network.

    ``hidden`` lists the hidden layer widths (``()``: multinomial logistic regression).
    ``hidden_activation`` is fitted by a polynomial of ``hidden_degree`` on
    ``[-hidden_bound, hidden_bound]``; the output sigmoid by ``output_degree`` on
    ``[-output_bound, output_bound]``: degree 1 (the default, 1 level: the gradient of a
    squared loss on one-hot targets) and 5 are stable; the least-squares fits of degree
    3 and 7 have a negative leading coefficient, which pushes scores that left the
    interval further out, and training diverges. Initial weights are drawn from ``seed`` (public:
    every party and the twin derive the same ones); ``init_scale`` multiplies the
    Glorot-uniform range. Labels are the integers ``0 .. n_classes - 1``.
    ``allow_model_decryption`` is this party's consent to reveal the trained model.
    ``params`` defaults to the 128-bit :data:`~phe_fl.ml.job.DEFAULT_PARAMS`; the insecure
    test set is for tests only, which name it.
    """

    n_features: int
    n_classes: int
    hidden: tuple[int, ...] = ()
    learning_rate: float = 1.0
    batch_size: int = 16
    iterations: int = 10
    momentum: float = 0.0
    hidden_activation: HiddenActivation = "relu"
    hidden_degree: int = 2
    hidden_bound: float = 4.0
    output_degree: int = 1
    output_bound: float = 4.0
    activation_method: FitMethod = "lstsq"
    params: str = DEFAULT_PARAMS
    seed: int = 0
    init_scale: float = 1.0
    allow_model_decryption: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ParameterError:
            return ParameterError(f"network job: {name} {why}")

        check_common_fields(self, bad)
        if not is_int(self.n_classes) or self.n_classes < 2:
            raise bad("n_classes", f"must be an integer >= 2, got {self.n_classes!r}")
        hidden = tuple(self.hidden)
        if len(hidden) > MAX_HIDDEN_LAYERS or not all(is_int(h) and h >= 1 for h in hidden):
            raise bad(
                "hidden",
                f"must list 0 to {MAX_HIDDEN_LAYERS} positive layer widths, got {self.hidden!r}",
            )
        object.__setattr__(self, "hidden", hidden)
        for name in ("hidden_bound", "output_bound", "init_scale"):
            v = getattr(self, name)
            if not is_real(v) or not v > 0:
                raise bad(name, f"must be a finite number > 0, got {v!r}")
        if self.hidden_activation not in ("relu", "sigmoid"):
            raise bad(
                "hidden_activation",
                f"must be 'relu' or 'sigmoid', got {self.hidden_activation!r}",
            )
        if not is_int(self.hidden_degree) or not 2 <= self.hidden_degree <= 7:
            raise bad(
                "hidden_degree",
                f"must be an integer in 2..7 (its derivative must not be constant), got "
                f"{self.hidden_degree!r}",
            )
        if not is_int(self.output_degree) or not 1 <= self.output_degree <= 15:
            raise bad("output_degree", f"must be an integer in 1..15, got {self.output_degree!r}")
        if not is_int(self.seed):
            raise bad("seed", f"must be an integer, got {self.seed!r}")
        self.check_fits()

    # -- derived --------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return "mlp" if self.hidden else "multinomial"

    @property
    def label_values(self) -> tuple[float, ...]:
        return tuple(float(c) for c in range(self.n_classes))

    @property
    def units(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden, self.n_classes)

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    @property
    def parameter_set(self) -> ParameterSet:
        return get_parameter_set(self.params)

    @property
    def layout(self) -> MLPLayout:
        return MLPLayout(self.parameter_set.slots, self.units)

    @property
    def hidden_act(self) -> PolyActivation:
        return _hidden_fit(
            self.hidden_activation,
            int(self.hidden_degree),
            float(self.hidden_bound),
            self.activation_method,
        )

    @property
    def output_act(self) -> PolyActivation:
        return fit_sigmoid(
            int(self.output_degree), float(self.output_bound), self.activation_method
        )

    def rotation_indices(self) -> tuple[int, ...]:
        return self.layout.rotation_indices()

    def initial_weights(self) -> list[FloatArray]:
        """Glorot-uniform weights from the public ``seed`` (zeros for multinomial
        regression, which has no symmetry to break); biases start at zero."""
        rng = np.random.default_rng(self.seed)
        layout = self.layout
        out: list[FloatArray] = []
        for k in range(1, self.n_layers + 1):
            n_out, n_in = layout.shape(k)
            w = np.zeros((n_out, n_in))
            if self.hidden:
                limit = self.init_scale * math.sqrt(6.0 / (n_in - 1 + n_out))
                w[:, :-1] = rng.uniform(-limit, limit, size=(n_out, n_in - 1))
            out.append(w)
        return out

    def check_fits(self) -> None:
        """Refuse a network of more weight ciphertexts than :data:`MAX_WEIGHT_CIPHERTEXTS`
        (every party holds them and their gradients), or an activation deeper than the
        levels available between two refreshes, saying what to change."""
        ps = self.parameter_set
        have = ps.usable_levels
        for act, what in ((self.hidden_act, "hidden"), (self.output_act, "output")):
            if act.depth > have:
                raise ParameterError(
                    f"network job: the degree-{act.degree} {what} activation needs "
                    f"{act.depth} levels but parameter set {ps.name!r} has {have} usable "
                    f"levels between refreshes; lower {what}_degree or use a parameter set "
                    f"with mult_depth >= {act.depth + ps.refresh_min_levels}"
                )
        layout = self.layout
        if layout.n_cts > MAX_WEIGHT_CIPHERTEXTS:
            raise ParameterError(
                f"network job: hidden {list(self.hidden)} with {self.n_features} features "
                f"makes {layout.n_cts} weight ciphertexts of {layout.side} x {layout.side} "
                f"tiles, more than {MAX_WEIGHT_CIPHERTEXTS}; use narrower layers"
            )


@functools.lru_cache(maxsize=64)
def _hidden_fit(kind: str, degree: int, bound: float, method: FitMethod) -> PolyActivation:
    fn = _relu if kind == "relu" else sigmoid
    return fit_activation(fn, f"{kind}-{method}-d{degree}-a{bound:g}", degree, bound, method)


# -- the encrypted forward and backward passes ----------------------------------------------
def _rotsum(ctx: Context, ct: Ciphertext, steps: Sequence[int]) -> Ciphertext:
    for s in steps:
        ct = ctx.add(ct, ctx.rotate(ct, s))
    return ct


def _times(
    ctx: Context, lv: Levels, a: Ciphertext, b: Ciphertext | FloatArray
) -> Refreshing[Ciphertext]:
    """``a * b`` slot-wise and rescaled; ``b`` a ciphertext or a plaintext vector."""
    a = yield from lv.ready(a, 1)
    if isinstance(b, np.ndarray):
        return ctx.rescale(ctx.mul_plain(a, b))
    b = yield from lv.ready(b, 1)
    return ctx.rescale(ctx.mul(a, b))


Tiles = list[Ciphertext | FloatArray]
"""A layer vector's tiles (:class:`~phe_fl.ml.mlp_layout.MLPLayout`): ciphertexts, or
plaintexts where nothing is secret (a chunk's own inputs at its party, a bias-only tile)."""


@dataclass
class _Forward:
    acts: list[Tiles]
    """``a_0`` (the input) to ``a_{L-1}``, each in layer k+1's input form, bias unit
    included, one entry per tile."""
    slopes: list[list[Ciphertext]]
    """``g'(z_k)`` for hidden layers (index k), masked and replicated, per tile."""
    z_out: list[Ciphertext]
    """The output pre-activations on the last layer's line, per output tile."""


def _dot(
    ctx: Context, lv: Levels, ws: Sequence[Ciphertext], xs: Sequence[Ciphertext | FloatArray]
) -> Refreshing[Ciphertext]:
    """``sum_j ws[j] * xs[j]`` slot-wise: the tiles of one output (or input) tile."""
    parts = []
    for w, x in zip(ws, xs, strict=True):
        parts.append((yield from _times(ctx, lv, w, x)))
    return ctx.sum(parts)


def _forward(
    job: MLPJob,
    ctx: Context,
    lv: Levels,
    weights: Sequence[Ciphertext],
    a0: Tiles,
    n: int,
    *,
    slopes: bool,
) -> Refreshing[_Forward]:
    layout = job.layout
    g, dg = job.hidden_act, job.hidden_act.derivative()
    acts: list[Tiles] = [a0]
    grads: list[list[Ciphertext]] = [[]]
    a = a0
    for k in range(1, job.n_layers + 1):
        w = weights[layout.layer_cts(k)]
        n_o, n_i = layout.grid(k)
        zs = []
        for o in range(n_o):
            z = yield from _dot(ctx, lv, w[o * n_i : (o + 1) * n_i], a)
            zs.append(_rotsum(ctx, z, layout.input_sum_steps(k)))
        if k == job.n_layers:
            return _Forward(acts, grads, zs)
        h_tiles: Tiles = []
        s_tiles: list[Ciphertext] = []
        for z, mask in zip(zs, layout.line_masks(k, n), strict=True):
            z = yield from lv.ready(z, max(g.depth, dg.depth if slopes else 0))
            h = g.encrypted(ctx, z, scale=mask)
            h_tiles.append(_rotsum(ctx, h, layout.forward_replicate_steps(k)))
            if slopes:
                s = dg.encrypted(ctx, z, scale=mask)
                s_tiles.append(_rotsum(ctx, s, layout.backward_replicate_steps(k)))
        if layout.bias:
            tile, ones = layout.bias_vector(k, n)
            if tile < len(h_tiles):
                last = h_tiles[tile]
                assert not isinstance(last, np.ndarray)
                h_tiles[tile] = ctx.add_plain(last, ones)
            else:  # the layer fills its last tile: the bias unit is a tile of its own
                h_tiles.append(ones)
        acts.append(h_tiles)
        grads.append(s_tiles)
        a = h_tiles
    raise AssertionError("unreachable: a network has at least one layer")


def _chunk_gradients(
    job: MLPJob,
    ctx: Context,
    weights: Sequence[Ciphertext],
    x: FloatArray,
    y: npt.NDArray[np.intp],
    eta: float,
) -> Refreshing[list[Ciphertext]]:
    """``U_1 .. U_L`` of one chunk (at most ``samples_per_ct`` samples), every layer's
    weight tiles in the model's order."""
    layout = job.layout
    lv = Levels(ctx)
    n = x.shape[0]
    a0: Tiles = list(layout.form_vectors(_with_bias(x), "col"))
    fw = yield from _forward(job, ctx, lv, weights, a0, n, slopes=True)
    last = job.n_layers
    sig = job.output_act
    onehot = np.eye(job.n_classes)[y]
    targets = layout.line_vectors(last, onehot)
    e: list[Ciphertext] = []
    for z, mask, target in zip(fw.z_out, layout.line_masks(last, n, eta), targets, strict=True):
        z = yield from lv.ready(z, sig.depth)
        line = sig.encrypted(ctx, z, scale=mask, shift=-eta * target)
        e.append(_rotsum(ctx, line, layout.backward_replicate_steps(last)))
    out: list[Ciphertext] = [e[0]] * layout.n_cts
    for k in range(last, 0, -1):
        for o, t in enumerate(e):  # each used several times below: ready once
            e[o] = yield from lv.ready(t, 1)
        a_prev = fw.acts[k - 1]
        for i, tile in enumerate(a_prev):
            if not isinstance(tile, np.ndarray):
                a_prev[i] = yield from lv.ready(tile, 1)
        n_o, n_i = layout.grid(k)
        start = layout.layer_cts(k).start
        for o in range(n_o):
            for i in range(n_i):
                out[start + o * n_i + i] = yield from _times(ctx, lv, e[o], a_prev[i])
        if k == 1:
            break
        w = weights[layout.layer_cts(k)]
        below = []
        masks = layout.line_masks(k - 1, n)
        for i in range(layout.tiles(layout.n_out(k - 1))):  # a bias-only tile gets no error
            s = yield from _dot(ctx, lv, e, [w[o * n_i + i] for o in range(n_o)])
            s = _rotsum(ctx, s, layout.output_sum_steps(k))
            s = yield from _times(ctx, lv, s, masks[i])
            s = _rotsum(ctx, s, layout.backward_replicate_steps(k - 1))
            below.append((yield from _times(ctx, lv, s, fw.slopes[k - 1][i])))
        e = below
    return out


def _with_bias(x: FloatArray) -> FloatArray:
    return np.hstack([np.asarray(x, dtype=np.float64), np.ones((x.shape[0], 1))])


class MLPParty(ShardWorker[MLPJob]):
    """One party's training endpoint for networks: its shard stays here as plaintext."""

    def __init__(self, index: int, job: MLPJob, shard: Shard) -> None:
        x, y = validate_shard(job, shard, party=index)
        super().__init__(index, job, x, y)
        self._labels = y.astype(np.intp)

    def start_map(self, request: LayersMapRequest) -> Lockstep[list[Ciphertext]]:
        """MAP of ``request``, paused before its first refresh: advance it (its chunks
        together) with the federation's refreshed ciphertexts until it finishes, then
        :func:`layer_sums` gives the encrypted ``U_1 .. U_L`` of this party's batch,
        unreduced over the samples of a chunk."""
        job = self.job
        if request.global_batch < 1:
            raise ProtocolError(f"party {self.index}: global batch must be positive")
        if len(request.weights) != job.layout.n_cts:
            raise ProtocolError(
                f"party {self.index}: got {len(request.weights)} weight ciphertexts, the "
                f"network has {job.layout.n_cts} ({job.n_layers} layers)"
            )
        ctx = request.weights[0].context
        if ctx.params.name != job.params:
            raise ProtocolError(
                f"party {self.index}: weights use parameter set {ctx.params.name!r}, the job "
                f"declares {job.params!r}"
            )
        eta = job.learning_rate / request.global_batch
        rows = batch_rows(self.n_samples, job.batch_size, request.iteration)
        x, y = self._x[rows], self._labels[rows]
        steps = Lockstep(
            [
                _chunk_gradients(job, ctx, request.weights, x[sl], y[sl], eta)
                for sl in chunks(len(rows), job.layout.samples_per_ct)
            ]
        )
        steps.advance()
        return steps


# -- REDUCE: the root --------------------------------------------------------------------
@dataclass(frozen=True)
class MLPIterationReport:
    iteration: int
    root_refreshes: int
    """Refreshes of the weights (and momentum terms) at the root."""
    party_refreshes: int
    """Refreshes of intermediate ciphertexts the parties asked for during MAP."""
    seconds: float
    map_rounds: int = 0
    """Collective refresh rounds (over a tree: round trips) the parties' refreshes took:
    one per pause of MAP, refreshing every ciphertext the parties need there at once."""

    @property
    def refreshes(self) -> int:
        return self.root_refreshes + self.party_refreshes


@dataclass
class EncryptedMLP:
    """The trained network: still encrypted, every layer's weight tiles in order
    (:meth:`~phe_fl.ml.mlp_layout.MLPLayout.layer_cts`)."""

    job: MLPJob
    weights: list[Ciphertext]
    reports: list[MLPIterationReport] = field(default_factory=list)

    @property
    def refreshes_per_iteration(self) -> list[int]:
        return [r.refreshes for r in self.reports]

    def decrypt(self, federation: LayersFederation) -> list[FloatArray]:
        """Plaintext weights ``W_k`` (bias column last), only if every party agreed."""
        return decrypt_layers(self.job, self.weights, federation.decrypt_if_agreed)


def decrypt_layers(
    job: MLPJob,
    weights: Sequence[Ciphertext],
    decrypt: Callable[..., FloatArray],
) -> list[FloatArray]:
    """``W_1 .. W_L`` from the model's tile ciphertexts, each decrypted by ``decrypt``
    (``decrypt(ct, length=...)``: a consented collective decryption)."""
    layout = job.layout
    if len(weights) != layout.n_cts:
        raise ProtocolError(f"{len(weights)} weight ciphertexts, the network has {layout.n_cts}")
    return [
        layout.weights_from_tiles(
            k, [decrypt(w, length=layout.block) for w in weights[layout.layer_cts(k)]]
        )
        for k in range(1, job.n_layers + 1)
    ]


def with_levels(
    weights: Sequence[Ciphertext], levels: int, refresh_many: RefreshMany
) -> tuple[list[Ciphertext], int]:
    """Every weight with fewer than ``levels`` levels left refreshed, in one round: one
    refresh of a weight saves every chunk that uses it (a party's in MAP: the full depth;
    a batch of queries in prediction: :func:`prediction_levels`) a deeper chain and the
    refreshes it would ask for. Returns the weights and how many were refreshed."""
    low = [k for k, w in enumerate(weights) if w.levels_left < levels]
    out = list(weights)
    if low:
        for k, w in zip(low, refresh_many([weights[k] for k in low]), strict=True):
            out[k] = w
    return out, len(low)


def _refresh_one(refresh_many: RefreshMany) -> Callable[[Ciphertext], Ciphertext]:
    return lambda ct: refresh_many([ct])[0]


class MLPTrainer:
    """The root's side of network training: owns the encrypted model, never a share.

    MAP runs in stages (:mod:`phe_fl.ml.staging`): the root sends the weights, every
    party runs its MAP until its intermediates need a refresh and answers with them; the
    root refreshes all of them in one collective round and sends each party its own back,
    until every party has answered with its gradients."""

    def __init__(self, job: MLPJob, federation: LayersFederation) -> None:
        require_job_params(job, federation.ctx.params.name)
        self.job = job
        self.federation = federation
        self.layout = job.layout
        self.deltas: list[Ciphertext] | None = None
        """With momentum: the last step ``W_t - W_{t-1}`` per layer (encrypted)."""

    def encrypt_initial(self, initial: Sequence[FloatArray] | None = None) -> list[Ciphertext]:
        ws = self.job.initial_weights() if initial is None else list(initial)
        if len(ws) != self.job.n_layers:
            raise ParameterError(
                f"{len(ws)} initial weight matrices for {self.job.n_layers} layers"
            )
        self.deltas = None
        return [
            self.federation.encrypt(tile)
            for k, w in enumerate(ws, start=1)
            for tile in self.layout.weights_vectors(k, w)
        ]

    def map(self, request: LayersMapRequest) -> tuple[tuple[Ciphertext, ...], int, int]:
        """MAP and COMBINE in stages: the parties' summed gradients, the refreshes they
        asked for and the refresh rounds those took."""
        fed = self.federation
        stage = 0
        refreshed: dict[str, tuple[Ciphertext, ...]] = {}
        sums: list[tuple[Ciphertext, ...]] = []
        finished = refreshes = rounds = 0
        while True:
            got = fed.map_stage(request, stage, refreshed)
            if got.gradients:
                sums.append(got.gradients)
            finished += got.finished
            if not got.pending:
                break
            parties = sorted(got.pending)
            flat = [ct for p in parties for ct in got.pending[p]]
            fresh = iter(fed.refresh_many(flat))
            refreshed = {p: tuple(next(fresh) for _ in got.pending[p]) for p in parties}
            refreshes += len(flat)
            rounds += 1
            stage += 1
        if finished != fed.n_parties:
            raise ProtocolError(
                f"MAP of iteration {request.iteration}: {finished} of {fed.n_parties} parties "
                f"answered with gradients"
            )
        return layer_sums(fed.ctx, sums), refreshes, rounds

    def reduce(
        self, ws: list[Ciphertext], combined: Sequence[Ciphertext]
    ) -> tuple[list[Ciphertext], int]:
        """The update; returns the new weights and the refreshes momentum took."""
        ctx = self.federation.ctx
        mu = float(self.job.momentum)
        new_ws, new_ds = [], []
        refreshes = 0
        lv = Levels(ctx)
        for k, (w, g) in enumerate(zip(ws, combined, strict=True)):
            g = _rotsum(ctx, g, self.layout.sample_sum_steps)
            if not mu:
                new_ws.append(ctx.sub(w, g))
                continue
            if self.deltas is None:
                d = ctx.negate(g)
            else:
                prev = self.deltas[k]
                ready = run_alone(lv.ready(prev, 1), _refresh_one(self.federation.refresh_many))
                refreshes += ready is not prev
                d = ctx.sub(ctx.rescale(ctx.mul_plain(ready, mu)), g)
            new_ds.append(d)
            new_ws.append(ctx.add(w, d))
        if mu:
            self.deltas = new_ds
        return new_ws, refreshes

    def step(
        self, ws: list[Ciphertext], iteration: int
    ) -> tuple[list[Ciphertext], MLPIterationReport]:
        t0 = time.perf_counter()
        fed = self.federation
        ws, kept = with_levels(ws, fed.ctx.params.mult_depth, fed.refresh_many)
        request = LayersMapRequest(iteration, tuple(ws), fed.global_batch(iteration))
        combined, party_refreshes, rounds = self.map(request)
        ws, momentum_refreshes = self.reduce(ws, combined)
        report = MLPIterationReport(
            iteration,
            kept + momentum_refreshes,
            party_refreshes,
            time.perf_counter() - t0,
            rounds,
        )
        return ws, report

    def train(
        self,
        initial: Sequence[FloatArray] | None = None,
        *,
        iterations: int | None = None,
        on_iteration: Callable[[MLPIterationReport], None] | None = None,
    ) -> EncryptedMLP:
        """Every iteration from ``initial`` (or the job's seeded weights); ``on_iteration``
        sees each report as it comes, and each iteration is logged at INFO on the
        ``phe_fl.ml`` logger (a long network job is never silent)."""
        n_iter = self.job.iterations if iterations is None else iterations
        ws = self.encrypt_initial(initial)
        model = EncryptedMLP(self.job, ws)
        for it in range(n_iter):
            ws, report = self.step(ws, it)
            model.reports.append(report)
            log.info(
                "MLP iteration %d/%d: %.2f s, %d refresh(es) at the root, %d by the parties "
                "in %d round(s)",
                it + 1,
                n_iter,
                report.seconds,
                report.root_refreshes,
                report.party_refreshes,
                report.map_rounds,
            )
            if on_iteration is not None:
                on_iteration(report)
        model.weights = ws
        return model


# -- the plaintext twin ------------------------------------------------------------------
@dataclass
class MLPPlaintextResult:
    """The twin's weights, and per iteration the largest |pre-activation| seen by the
    hidden and output polynomials (beyond their intervals they stop approximating)."""

    weights: list[FloatArray]
    max_abs_hidden: list[float]
    max_abs_output: list[float]


def _twin_forward(
    job: MLPJob, weights: Sequence[FloatArray], x: FloatArray
) -> tuple[list[FloatArray], list[FloatArray]]:
    """Inputs (bias included) and pre-activations of every layer, samples in rows."""
    g = job.hidden_act
    a = _with_bias(x)
    acts, zs = [a], []
    for k, w in enumerate(weights, start=1):
        z = a @ np.asarray(w).T
        zs.append(z)
        if k < len(weights):
            a = _with_bias(g(z))
            acts.append(a)
    return acts, zs


def train_plaintext_mlp(
    job: MLPJob, shards: Sequence[Shard], initial: Sequence[FloatArray] | None = None
) -> MLPPlaintextResult:
    """Exactly the encrypted run's math in numpy: same polynomials, batches and update."""
    data = [(x, y.astype(np.intp)) for x, y in validate_shards(job, shards)]
    dg, sig = job.hidden_act.derivative(), job.output_act
    ws = [np.array(w, dtype=np.float64) for w in (initial or job.initial_weights())]
    ds = [np.zeros_like(w) for w in ws]
    max_h, max_o = [], []
    for it in range(job.iterations):
        batches = [batch_rows(len(y), job.batch_size, it) for _, y in data]
        eta = job.learning_rate / sum(len(r) for r in batches)
        grads = [np.zeros_like(w) for w in ws]
        worst_h = worst_o = 0.0
        for (x, y), rows in zip(data, batches, strict=True):
            acts, zs = _twin_forward(job, ws, x[rows])
            worst_o = max(worst_o, float(np.abs(zs[-1]).max()))
            if len(zs) > 1:
                worst_h = max(worst_h, max(float(np.abs(z).max()) for z in zs[:-1]))
            e = eta * (sig(zs[-1]) - np.eye(job.n_classes)[y[rows]])
            for k in range(len(ws), 0, -1):
                grads[k - 1] += e.T @ acts[k - 1]
                if k > 1:
                    e = (e @ ws[k - 1][:, :-1]) * dg(zs[k - 2])
        for k in range(len(ws)):
            ds[k] = job.momentum * ds[k] - grads[k]
            ws[k] = ws[k] + ds[k]
        max_h.append(worst_h)
        max_o.append(worst_o)
    return MLPPlaintextResult(ws, max_h, max_o)


def mlp_scores(job: MLPJob, weights: Sequence[FloatArray], x: FloatArray) -> FloatArray:
    """Output pre-activations of the (plaintext) model: the hidden polynomial is part of
    the model; argmax over classes is the prediction."""
    return _twin_forward(job, weights, np.asarray(x, dtype=np.float64))[1][-1]


def mlp_predict(job: MLPJob, weights: Sequence[FloatArray], x: FloatArray) -> npt.NDArray[np.intp]:
    return np.asarray(np.argmax(mlp_scores(job, weights, x), axis=1), dtype=np.intp)


# -- in-process setup --------------------------------------------------------------------
def setup_local_mlp(
    job: MLPJob,
    shards: Sequence[Shard],
    *,
    consents: Sequence[bool] | None = None,
    rng: random.Random | None = None,
    wire: bool = True,
) -> LocalTrainingFederation:
    """Validate the job and every shard, then (only then) generate keys with exactly the
    network's rotation keys. ``consents`` overrides each party's decryption consent."""
    checked = validate_shards(job, shards)
    if consents is not None and len(consents) != len(checked):
        raise ParameterError(f"{len(consents)} consents for {len(checked)} parties")
    agree = list(consents) if consents is not None else [job.allow_model_decryption] * len(checked)
    workers = [
        MLPParty(i, _with_consent(job, bool(c)), s)
        for i, (c, s) in enumerate(zip(agree, checked, strict=True))
    ]
    fed = LocalFederation.setup(
        job.parameter_set, len(checked), rotations=job.rotation_indices(), rng=rng, wire=wire
    )
    return LocalTrainingFederation(fed, workers)


def _with_consent(job: MLPJob, consent: bool) -> MLPJob:
    return (
        job
        if job.allow_model_decryption == consent
        else dataclasses.replace(job, allow_model_decryption=consent)
    )


# -- oblivious prediction ------------------------------------------------------------------
def encrypt_mlp_queries(
    job: MLPJob, encrypt: Callable[[FloatArray], Ciphertext], x: FloatArray
) -> list[Ciphertext]:
    """The querier's samples in the first layer's input form, one ciphertext per chunk,
    encrypted with ``encrypt`` (under the joint public key)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != job.n_features or x.shape[0] < 1:
        raise ParameterError(
            f"queries must be a non-empty n x {job.n_features} array, got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ParameterError("queries contain NaN or infinite values")
    layout = job.layout
    return [
        encrypt(tile)
        for sl in chunks(x.shape[0], layout.samples_per_ct)
        for tile in layout.form_vectors(_with_bias(x[sl]), "col")
    ]


def evaluate_mlp(
    job: MLPJob,
    ctx: Context,
    weights: Sequence[Ciphertext],
    queries: Sequence[Ciphertext],
    n_samples: int,
    refresh_many: RefreshMany,
) -> tuple[list[Ciphertext], int, int]:
    """The root's side: forward pass on encrypted queries, every slot but the class
    scores masked to zero. The query ciphertexts advance together, so a refresh they all
    need at one layer is one collective round for the batch, not one per ciphertext;
    weights and queries above :func:`prediction_levels` are evaluated without the towers
    the pass never uses. Returns the score ciphertexts, the refreshes and the refresh
    rounds it took."""
    layout = job.layout
    slices = chunks(n_samples, layout.samples_per_ct)
    per = layout.tiles(layout.n_in(1))
    if len(queries) != len(slices) * per:
        raise ProtocolError(
            f"{len(queries)} query ciphertexts for {n_samples} samples ({layout.samples_per_ct} "
            f"a ciphertext, {per} tile(s) each: {len(slices) * per} expected)"
        )
    keep = prediction_levels(job)
    weights = [ctx.drop_levels(w, keep) if w.levels_left > keep else w for w in weights]
    queries = [ctx.drop_levels(q, keep) if q.levels_left > keep else q for q in queries]

    def scores(tiles: Tiles, n: int) -> Refreshing[list[Ciphertext]]:
        lv = Levels(ctx)
        fw = yield from _forward(job, ctx, lv, weights, tiles, n, slopes=False)
        out = []
        for z, mask in zip(fw.z_out, layout.line_masks(job.n_layers, n), strict=True):
            out.append((yield from _times(ctx, lv, z, mask)))
        return out

    steps = Lockstep(
        [
            scores(list(queries[j * per : (j + 1) * per]), sl.stop - sl.start)
            for j, sl in enumerate(slices)
        ]
    )
    pending = steps.advance()
    refreshes = rounds = 0
    while pending:
        refreshes += len(pending)
        rounds += 1
        pending = steps.advance(refresh_many(pending))
    return pack_scores(job, ctx, steps.results()), refreshes, rounds


def prediction_levels(job: MLPJob) -> int:
    """Levels the weights and the queries need for a forward pass without a refresh: a
    product per layer, the hidden activation per hidden layer, the final mask, and what
    :class:`~phe_fl.ml.staging.Levels` keeps for a refresh; the whole depth when the pass
    refreshes anyway. Evaluating at this level instead of the top drops RNS towers from
    every operation (and from every query the querier sends)."""
    ps = job.parameter_set
    need = job.n_layers + len(job.hidden) * job.hidden_act.depth + 1 + ps.refresh_min_levels
    return min(need, ps.mult_depth)


def pack_scores(
    job: MLPJob, ctx: Context, per_chunk: Sequence[Sequence[Ciphertext]]
) -> list[Ciphertext]:
    """Up to ``T`` chunks' score lines in one ciphertext: chunk ``j`` of a group shifted
    ``j`` units across its line (a tree of rotations by the replicate steps, one rotation
    per merge), so the key switch to the querier and its decryption take
    ``ceil(chunks / T)`` ciphertexts per output tile instead of one per chunk. The lines
    are masked (zero elsewhere): the shifted copies never overlap. Returns group by group,
    each group's output tiles in order."""
    layout = job.layout
    step = 1 if job.n_layers % 2 else layout.side  # one unit across the line
    n_tiles = layout.tiles(job.n_classes)
    out = []
    for g in range(0, len(per_chunk), layout.side):
        for o in range(n_tiles):
            group = [scores[o] for scores in per_chunk[g : g + layout.side]]
            shift = step
            while len(group) > 1:
                merged = [
                    ctx.add(group[i], ctx.rotate(group[i + 1], -shift))
                    if i + 1 < len(group)
                    else group[i]
                    for i in range(0, len(group), 2)
                ]
                group, shift = merged, 2 * shift
            out.append(group[0])
    return out


def decode_mlp_scores(
    job: MLPJob, querier: QuerierKeyPair, cts: Sequence[Ciphertext], n_samples: int
) -> FloatArray:
    """The querier decrypts its score ciphertexts (:func:`pack_scores`' groups of up to
    ``T`` chunks, each group's output tiles): ``n_samples x n_classes``."""
    layout = job.layout
    per = layout.tiles(job.n_classes)
    slices = chunks(n_samples, layout.samples_per_ct)
    groups = [slices[g : g + layout.side] for g in range(0, len(slices), layout.side)]
    if len(cts) != len(groups) * per:
        raise ProtocolError(f"{len(cts)} score ciphertexts, {len(groups) * per} expected")
    rows = []
    for g, group in enumerate(groups):
        tiles = [querier.decrypt(ct, length=layout.slots) for ct in cts[g * per : (g + 1) * per]]
        for j, sl in enumerate(group):
            rows.append(layout.read_line(job.n_layers, tiles, sl.stop - sl.start, offset=j))
    return np.vstack(rows)


def predict_local_mlp(
    job: MLPJob,
    fed: LocalFederation,
    weights: Sequence[Ciphertext],
    x: FloatArray,
    querier: QuerierKeyPair,
    *,
    on_rows: Callable[[int, int], None] | None = None,
) -> FloatArray:
    """Oblivious prediction in one process: encrypt, evaluate, key-switch, decode.
    Returns the class scores only the querier could read.

    It streams: one score group's rows (``T`` query ciphertexts, packed into one score
    ciphertext per output tile by :func:`pack_scores`) go through the whole flow before
    the next are encrypted and only their decoded scores are kept, so this function holds
    one group's ciphertexts whatever the number of rows (each simulated party still caches
    its last 256 key-switch shares, see :func:`phe_fl.ml.prediction.predict_local`);
    ``on_rows(done, total)`` follows the progress."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ParameterError(
            f"queries must be a non-empty n x {job.n_features} array, got shape {x.shape}"
        )
    n = x.shape[0]
    per = job.layout.samples_per_ct * job.layout.side
    out: list[FloatArray] = []

    def refresh_many(cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        return [fed.refresh(c) for c in cts]

    for start in range(0, max(n, 1), per):  # no rows: the first chunk is refused, by name
        rows = x[start : start + per]
        queries = encrypt_mlp_queries(job, fed.encrypt, rows)
        weights, _ = with_levels(weights, prediction_levels(job), refresh_many)
        scores, _, _ = evaluate_mlp(job, fed.ctx, weights, queries, rows.shape[0], refresh_many)
        del queries
        switched = [fed.key_switch(s, querier.public_key) for s in scores]
        del scores
        out.append(decode_mlp_scores(job, querier, switched, rows.shape[0]))
        del switched
        if on_rows is not None:
            on_rows(start + rows.shape[0], n)
    return np.vstack(out)
