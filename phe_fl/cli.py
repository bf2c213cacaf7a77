"""The ``phe-fl`` command line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from phe_fl.errors import ConfigError, ParameterError, PheFlError

if TYPE_CHECKING:
    from phe_fl.mhe.context import FloatArray
    from phe_fl.ml import MLPJob

__all__ = ["main", "read_query_csv", "check_query_width"]


# -- argument types: refuse a nonsense value while parsing, before anything runs ---------
def _int_at_least(minimum: int, what: str = "") -> Callable[[str], int]:
    """An argparse ``type=`` for integers >= ``minimum``."""
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if what:
        wanted += f" ({what})"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)


def _positive_float(text: str) -> float:
    """An argparse ``type=`` for finite numbers > 0 (refuses nan, inf, 0, negatives)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _clip(text: str) -> float:
    """``--feature-clip``: a number > 0, or ``inf`` for no clip."""
    if text.strip().lower() in ("inf", "infinity", "none"):
        return math.inf
    return _positive_float(text)


def _positive_seconds(text: str) -> float:
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds > 0, got {text!r}"
        ) from None


def _unit_interval(text: str) -> float:
    """A number in [0, 1) (momentum)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _widths(text: str) -> list[int]:
    """``64,64``: comma-separated positive layer widths."""
    try:
        widths = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"must be positive layer widths separated by commas (64,64), got {text!r}"
        )
    return widths


def _rotation_steps(text: str) -> list[int]:
    """``1,2,-4``: comma-separated non-zero integers (empty: none)."""
    steps = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            step = int(part)
        except ValueError:
            step = 0
        if step == 0:
            raise argparse.ArgumentTypeError(
                f"must be comma-separated non-zero integers (rotation steps, e.g. 1,2,4), "
                f"got {part!r} in {text!r}"
            )
        steps.append(step)
    return steps


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: ``phe-fl: error: ...`` (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"phe-fl: error: {message} (see `{self.prog} --help`)\n")


def _os_error_line(exc: OSError) -> str:
    """``<what>: <path>`` for an OSError (``No such file or directory: certs/ca.pem``)."""
    if exc.filename is None:
        return str(exc) or type(exc).__name__
    what = exc.strerror or type(exc).__name__
    where = str(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    return f"{what}: {where}"


def _cmd_params(args: argparse.Namespace) -> int:
    from phe_fl.mhe import PARAMETER_SETS

    print(f"{'name':<20} {'ring':>6} {'slots':>6} {'depth':>5} {'usable':>6} {'security':<12}")
    for p in PARAMETER_SETS.values():
        sec = "128-bit" if p.secure else "INSECURE"
        print(
            f"{p.name:<20} {'2^' + str(p.log_ring_dim):>6} {p.slots:>6} {p.mult_depth:>5} "
            f"{p.usable_levels:>6} {sec:<12}"
        )
    print("usable = multiplicative levels between two collective refreshes")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from phe_fl.demo import run_demo

    run_demo(args.providers, args.params, iterations=args.iterations, model=args.model)
    return 0


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def _check_output_folder(path: Path, option: str) -> None:
    """Refuse, before writing anything, an output folder that is a file or lies under one."""
    for folder in (path, *path.parents):
        if folder.exists():
            if folder.is_dir():
                return
            if folder == path:
                raise ConfigError(f"{option} {path} is a file, not a folder")
            raise ConfigError(f"{option} {path} lies under {folder}, which is not a folder")


def _cmd_certs(args: argparse.Namespace) -> int:
    from phe_fl.federation.certs import create_federation, issue_certificate

    out = Path(args.out)
    _check_output_folder(out, "--out")
    hosts = _csv(args.hosts)
    if args.add_node is not None or args.add_querier is not None:
        if args.nodes is not None or args.queriers is not None:
            raise ParameterError(
                "--add-node/--add-querier cannot be combined with --nodes/--queriers"
            )
        ca_dir = Path(args.ca) if args.ca else out
        options = {"hosts": hosts, "days": args.days, "overwrite": args.overwrite}
        if args.add_node is not None:
            member = issue_certificate(ca_dir, "node", args.add_node, out, **options)
            print(f"issued node:{args.add_node} (CA certificate: {member.ca})")
        else:
            member = issue_certificate(ca_dir, "querier", args.add_querier, out, **options)
            print(f"issued querier:{args.add_querier} (CA certificate: {member.ca})")
        files = [member.cert, member.key]
    else:
        if args.nodes is None:
            raise ParameterError("give --nodes ID,ID,... (or --add-node/--add-querier ID)")
        if args.ca:
            raise ParameterError("--ca is only for --add-node/--add-querier")
        if args.queriers is None:
            queriers = ["querier"]
        else:
            queriers = _csv(args.queriers) if args.queriers.strip() else []
        fed = create_federation(
            out,
            _csv(args.nodes),
            queriers,
            hosts=hosts,
            days=args.days,
            overwrite=args.overwrite,
        )
        files = fed.files()
        print(
            f"created federation CA with {len(fed.nodes)} node(s), {len(fed.queriers)} querier(s)"
        )
    for path in files:
        print(f"  wrote {path}")
    print("keep the *.key files private (mode 0600); ca.key is needed only to add members")
    return 0


def _cmd_ca(args: argparse.Namespace) -> int:
    from phe_fl.federation.certs import ca_fingerprint, create_ca

    if args.action == "init":
        _check_output_folder(Path(args.ca), "--ca")
        paths = create_ca(Path(args.ca), overwrite=args.overwrite)
        print(f"created the federation CA in {args.ca}")
        print(f"  wrote {paths.cert} (public: goes into every kit)")
        print(f"  wrote {paths.key} (private: keep it offline; it signs every member)")
        print(f"CA fingerprint (SHA-256): {ca_fingerprint(paths.cert)}")
        return 0
    return _ca_sign(args)


def _ca_sign(args: argparse.Namespace) -> int:
    """Sign a member's request: only its identity and hosts come from the request."""
    from phe_fl.federation.certs import read_signing_request, sign_request

    if not args.csr or not args.out:
        raise ParameterError(
            "`phe-fl ca sign` needs --csr (the request) and --out (the certificate)"
        )
    request = read_signing_request(Path(args.csr))
    who = request.identity
    days = args.days
    if args.federation:
        from phe_fl.federation.provision import load_federation

        fed = load_federation(args.federation)
        allowed = {h.lower() for h in fed.member_hosts(who.role, who.name)}
        extra = [h for h in request.hosts if h.lower() not in allowed]
        if extra:
            raise ParameterError(
                f"{args.csr} asks for {', '.join(extra)}, which {args.federation} does not "
                f"declare for {who} (declared: {', '.join(sorted(allowed)) or 'none'})"
            )
        days = days or fed.days
    out = sign_request(
        Path(args.ca), request, Path(args.out), days or 365, overwrite=args.overwrite
    )
    names = ", ".join(request.hosts) or "no host names"
    print(f"signed {who} ({names}) -> {out}")
    print(
        f"send {out} back to {who.name}; it installs it with "
        f"`phe-fl csr --kit . --install {out.name}`"
    )
    return 0


def _cmd_provision(args: argparse.Namespace) -> int:
    from phe_fl.federation.provision import load_federation, provision

    fed = load_federation(args.federation)
    out = Path(args.out)
    _check_output_folder(out, "--out")
    result = provision(fed, out, Path(args.ca), overwrite=args.overwrite)
    if result.ca_created:
        print(f"created the federation CA in {args.ca} (keep {args.ca}/ca.key offline)")
    print(f"federation {fed.name}: {len(fed.sites)} site(s), {len(fed.queriers)} querier(s)")
    for folder in result.kits.values():
        print(f"  wrote {folder}/")
    print(f"CA fingerprint (SHA-256): {result.fingerprint}")
    print(
        "ship each kit to its site (no kit holds a private key); each site runs "
        "`phe-fl csr --kit .` and sends you its .csr to sign with `phe-fl ca sign`"
    )
    return 0


def _cmd_csr(args: argparse.Namespace) -> int:
    from phe_fl.federation.certs import ca_fingerprint
    from phe_fl.federation.provision import kit_install, kit_request

    if args.install:
        kit = kit_install(args.kit, args.install)
        print(f"installed {kit.cert} for {kit.role}:{kit.id}")
        if kit.role == "node":
            print(f"next: `phe-fl preflight --config {kit.folder / 'node.toml'}`")
        return 0
    kit, created = kit_request(args.kit)
    if created:
        print(f"made the private key {kit.key} (mode 0600: it never leaves this machine)")
    else:
        print(f"reused the private key {kit.key}")
    print(f"wrote the signing request {kit.csr} for {kit.role}:{kit.id}")
    print(
        f"CA fingerprint in this kit (compare it with the CA operator's): {ca_fingerprint(kit.ca)}"
    )
    print(
        f"send {kit.csr.name} to the CA operator; install what comes back with "
        f"`phe-fl csr --kit {kit.folder} --install {kit.id}.pem`"
    )
    return 0


def _cmd_preflight(args: argparse.Namespace) -> int:
    from phe_fl.federation.preflight import format_findings, preflight

    findings = preflight(args.config, network=not args.no_network, timeout_s=args.timeout)
    print(format_findings(findings))
    return 1 if any(f.level == "ERROR" for f in findings) else 0


def _cmd_node(args: argparse.Namespace) -> int:

    from phe_fl.federation.config import load_node_config
    from phe_fl.federation.node import serve_forever
    from phe_fl.federation.observability import configure_logging

    config = load_node_config(args.config)
    configure_logging(args.log_level, args.log_format, node=config.id)
    serve_forever(config, deadline_s=args.deadline)
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from phe_fl.federation.config import TlsPaths
    from phe_fl.federation.progress import ProgressPrinter
    from phe_fl.federation.querier import Querier, new_job_id
    from phe_fl.mhe import get_parameter_set
    from phe_fl.ml import MLPJob, TrainingJob

    def checked(params: str) -> TrainingJob | MLPJob | None:
        """What can be checked without the federation (before connecting, when the
        parameter set is given): rotations in range, a valid training job."""
        if args.job == "setup":
            slots = get_parameter_set(params).slots
            out_of_range = [r for r in args.rotations if not -slots < r < slots]
            if out_of_range:
                raise ParameterError(
                    f"--rotations {out_of_range} out of range for parameter set {params} "
                    f"(steps must be within +-{slots - 1})"
                )
        elif args.job == "train":  # what is not given keeps the job's defaults
            given = {
                "iterations": args.iterations,
                "learning_rate": args.learning_rate,
                "batch_size": args.batch_size,
                "activation_degree": args.degree,
                "activation_bound": args.bound,
                "feature_clip": args.feature_clip,
                "dp_noise_multiplier": args.dp_noise_multiplier,
                "dp_clip": args.dp_clip,
                "momentum": args.momentum,
                "model": args.model or None,
            }
            if args.dp_sample_rate is not None:
                raise ParameterError(
                    "--dp-sample-rate is for fedavg; a DP training samples batch-size rows per "
                    "node and iteration"
                )
            family = args.model or "logistic"
            if family in NETWORK_MODELS:
                return _network_job(args, params)
            if args.hidden or args.classes is not None or args.tile is not None:
                raise ParameterError(
                    f"--hidden, --classes and --tile are for networks (--model mlp or "
                    f"multinomial), not --model {family}"
                )
            options = {k: v for k, v in given.items() if v is not None}
            return TrainingJob(
                n_features=args.features, params=params, nesterov=args.nesterov, **options
            )
        elif args.job == "model" and not args.model:
            raise ParameterError("`phe-fl query model` needs --model (the training job id)")
        elif args.job == "fedavg":
            _fedavg_spec(args)  # refuse a bad job before connecting
        return None

    spec = checked(args.params) if args.params else None
    tls = TlsPaths(Path(args.cert), Path(args.key), Path(args.ca))
    querier = Querier(
        args.root, tls, args.params, name=args.name, on_event=ProgressPrinter(per_node=args.verbose)
    )
    if not args.params:  # learned from the root
        try:
            spec = checked(querier.ctx.params.name)
        except BaseException:
            querier.close()
            raise
    try:
        job = args.job_id or new_job_id()
        if args.job == "setup":
            keygen = querier.setup(job, args.rotations)
            print(f"job {job}: collective keys ready (key generation {keygen})")
        elif args.job == "status":
            status = querier.status(job)
            print(f"{len(status.nodes)} node(s) connected to the tree")
            for n in status.nodes:
                print(f"  {n.node_id:<16} parent {n.parent_id or '-':<16} keys {n.key_state}")
            for missing in status.missing:
                print(f"  {missing:<16} NOT CONNECTED")
            if status.schema is not None:
                print(status.schema.describe())
            if status.privacy_budget:
                print(
                    f"privacy budget: epsilon {status.privacy_spent:.3g} spent of "
                    f"{status.privacy_budget:g} (delta {status.privacy_delta:g})"
                )
        elif args.job == "train" and isinstance(spec, MLPJob):
            if args.detach:
                from phe_fl.federation.messages import TrainNetworkJob

                info = querier.detach(job, TrainNetworkJob(spec))
                print(f"job {job}: {info.state}; follow it with `phe-fl jobs watch {job}`")
                return 0
            run = querier.train_network(job, spec)
            print(
                f"job {job}: trained a {spec.model} network {'-'.join(map(str, spec.units))} "
                f"for {len(run.refreshes)} iterations, {sum(run.refreshes)} collective "
                f"refreshes ({sum(run.party_refreshes)} of the parties' intermediates, in "
                f"{sum(run.map_rounds)} rounds); the model stays encrypted at the root as {job!r}"
            )
        elif args.job == "train":
            assert isinstance(spec, TrainingJob)  # checked() builds it for a training
            if args.detach:
                from phe_fl.federation.messages import TrainJob

                info = querier.detach(job, TrainJob(spec, True, args.margin_check_every))
                print(f"job {job}: {info.state}; follow it with `phe-fl jobs watch {job}`")
                return 0
            run = querier.train(job, spec, margin_check_every=args.margin_check_every)
            print(
                f"job {job}: trained {len(run.refreshes)} iterations, "
                f"{sum(run.refreshes)} collective refreshes; the model stays encrypted "
                f"at the root as {job!r}"
            )
            if run.dp_epsilon:
                print(
                    f"differentially private: epsilon {run.dp_epsilon:.3g}, delta {run.dp_delta:g}"
                )
        elif args.job == "fedavg":
            model = querier.fedavg(job, _fedavg_spec(args))
            last = model.rounds[-1] if model.rounds else None
            print(
                f"job {job}: {len(model.rounds)} FedAvg rounds of app {args.app!r}"
                + (f", last loss {last.loss:.4f} over {last.examples} examples" if last else "")
            )
            if model.dp_epsilon:
                print(
                    f"differentially private: epsilon {model.dp_epsilon:.3g}, "
                    f"delta {model.dp_delta:g}"
                )
            if model.parameters is None:
                print("the root keeps the model (its release_fedavg_model = false)")
            elif args.output:
                print(f"model saved to {model.save(args.output)}")
        elif args.job == "model":
            _, described = querier.model_info(f"{job}-info", args.model)
            if isinstance(described, MLPJob):
                layers = querier.network_weights(job, args.model)
                print(f"model {args.model}: {len(layers)} layer(s), W_k rows (bias column last)")
                for k, w in enumerate(layers, start=1):
                    print(f"  W_{k} ({w.shape[0]} x {w.shape[1]}):")
                    for row in w:
                        print("    " + " ".join(f"{v:.4f}" for v in row))
            else:
                weights = querier.model_weights(job, args.model)
                print(f"model {args.model}: weights (intercept last)")
                print("  " + " ".join(f"{w:.4f}" for w in weights))
        else:
            stats = querier.stats(job, args.features)
            print(f"job {job}: pooled over {stats.count} samples")
            for j, (m, v) in enumerate(zip(stats.mean, stats.variance, strict=True)):
                print(f"  feature {j:3d}: mean {m: .6f}  variance {v: .6f}")
    finally:
        querier.close()
    return 0


NETWORK_MODELS = ("mlp", "multinomial")
"""``query train --model``: the families trained as networks (MLPJob)."""


def _network_job(args: argparse.Namespace, params: str) -> MLPJob:
    """A network job from ``query train --model mlp|multinomial`` (what is not given
    keeps MLPJob's defaults); MLPJob refuses a bad value naming its field."""
    from phe_fl.ml import MLPJob

    if args.model == "mlp" and not args.hidden:
        raise ParameterError("--model mlp needs --hidden (layer widths, e.g. 64,64)")
    if args.model == "multinomial" and args.hidden:
        raise ParameterError("--model multinomial has no hidden layer: drop --hidden")
    for flag, value in (
        ("--margin-check-every", args.margin_check_every),
        ("--feature-clip", args.feature_clip),
        ("--dp-noise-multiplier", args.dp_noise_multiplier),
    ):
        if value:
            raise ParameterError(f"{flag} is for GLMs, not --model {args.model}")
    given = {
        "iterations": args.iterations,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "momentum": args.momentum,
        "hidden_degree": args.degree,
        "hidden_bound": args.bound,
        "seed": args.seed,
        "tile": args.tile,
    }
    options = {k: v for k, v in given.items() if v is not None}
    return MLPJob(
        n_features=args.features,
        n_classes=2 if args.classes is None else args.classes,
        hidden=tuple(args.hidden),
        params=params,
        allow_model_decryption=args.allow_model_decryption,
        nesterov=args.nesterov,
        **options,
    )


def _fedavg_spec(args: argparse.Namespace) -> Any:
    from phe_fl.fedavg import FedAvgSpec

    if not args.app:
        raise ParameterError("`phe-fl query fedavg` needs --app (an app every node declares)")
    if args.output and Path(args.output).suffix not in (".npz", ".pt"):
        raise ParameterError(f"--output {args.output}: save a FedAvg model as .npz or .pt")
    given = {
        "rounds": args.rounds,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "dp_noise_multiplier": args.dp_noise_multiplier,
        "dp_clip": args.dp_clip,
        "dp_sample_rate": args.dp_sample_rate,
    }
    return FedAvgSpec(args.app, **{k: v for k, v in given.items() if v is not None})


def _querier(args: argparse.Namespace, *, per_node: bool = False) -> Any:
    from phe_fl.federation.config import TlsPaths
    from phe_fl.federation.progress import ProgressPrinter
    from phe_fl.federation.querier import Querier

    tls = TlsPaths(Path(args.cert), Path(args.key), Path(args.ca))
    printer = ProgressPrinter(per_node=per_node)
    return Querier(args.root, tls, args.params, name=args.name, on_event=printer)


def _job_line(j: Any) -> str:
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.updated))
    unit = {"train": "iterations", "train_network": "iterations", "fedavg": "rounds"}.get(j.kind)
    extra = f", {j.iterations_done} {unit} checkpointed" if unit else ""
    resumed = f", resumed {j.resumes}x" if j.resumes else ""
    error = f": {j.error}" if j.error else ""
    return f"{j.job_id:<18} {j.kind:<14} {j.state:<12} {when}{extra}{resumed}{error}"


def _cmd_jobs(args: argparse.Namespace) -> int:
    querier = _querier(args, per_node=args.verbose)
    try:
        if args.action == "list":
            jobs = querier.jobs()
            print(f"{len(jobs)} job(s) of querier {args.name}")
            for j in sorted(jobs, key=lambda j: j.created):
                print("  " + _job_line(j))
            return 0
        if not args.job_id:
            raise ParameterError(f"`phe-fl jobs {args.action}` needs a job id")
        if args.action == "status":
            info = querier.watch_info(args.job_id)
            print(_job_line(info))
        elif args.action == "cancel":
            print(_job_line(querier.cancel(args.job_id)))
        else:  # watch
            result, info = querier.watch(args.job_id)
            print(_job_line(info))
            if result is not None:
                print(f"  result: {type(result).__name__}")
            return 0 if info.state == "done" else 1
    finally:
        querier.close()
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    querier = _querier(args)
    try:
        models = querier.models()
    finally:
        querier.close()
    print(f"{len(models)} trained model(s) at the root (all still encrypted)")
    for model in models:
        s = model.spec or model.network
        what = (
            f"{s.model} regression"
            if model.network is None
            else f"{s.model} network {'-'.join(map(str, model.network.units))}"
        )
        print(
            f"  {model.model_id:<18} {what}, {s.n_features} features, "
            f"{s.iterations} iterations, trained for {model.querier}, "
            f"{sum(model.refreshes)} refreshes"
        )
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from phe_fl.federation.audit import format_summary, verify

    path = Path(args.file)
    print(format_summary(verify(path), path))
    return 0


def read_query_csv(
    path: Path | str, n_features: int | None = None, *, labels_last: bool = False
) -> tuple[FloatArray, FloatArray | None]:
    """The samples of ``phe-fl predict --input``: ``(x, y)``, ``y`` the last column when
    ``labels_last`` (else None). A file that is missing, empty, not numeric, ragged or
    holds nan/inf is a ConfigError naming it; with ``n_features``, so is a wrong width."""
    import warnings

    import numpy as np

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on an empty file; refused below
            table = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except OSError as exc:
        what = exc.strerror if isinstance(exc.strerror, str) else str(exc)
        raise ConfigError(f"--input {path} cannot be read: {what}") from None
    except ValueError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--input {path} is not a numeric CSV: {detail}") from None
    if table.size == 0:
        raise ConfigError(f"--input {path} holds no samples")
    if not np.isfinite(table).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(table))[0])
        raise ConfigError(f"--input {path}: row {row + 1}, column {col + 1} is not a finite number")
    if labels_last:
        if table.shape[1] < 2:
            raise ConfigError(
                f"--input {path} has 1 column; with --labels-last it needs features and a label"
            )
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = table, None
    if n_features is not None:
        check_query_width(x, n_features, path, labels_last=labels_last)
    return x, y


def check_query_width(
    x: FloatArray, n_features: int, path: Path | str, *, labels_last: bool = False
) -> None:
    """Refuse samples whose width is not the model's feature count, naming both."""
    if x.shape[1] != n_features:
        label = " (besides the --labels-last label column)" if labels_last else ""
        raise ConfigError(
            f"--input {path} has {x.shape[1]} feature column(s){label}, "
            f"but the model takes {n_features} feature(s)"
        )


def _check_output_file(path: Path) -> None:
    """Refuse, before any work, an ``--output`` that cannot be written."""
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder, not a file")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {path}: its folder {path.parent} is no folder")


def _write_result(path: Path, text: str) -> None:
    """Write a result file whole or not at all (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cmd_predict(args: argparse.Namespace) -> int:
    from phe_fl.federation.config import TlsPaths
    from phe_fl.federation.data import has_column_names
    from phe_fl.federation.progress import ProgressPrinter
    from phe_fl.federation.querier import Querier, new_job_id
    from phe_fl.ml import TrainingJob

    named = has_column_names(args.input)  # a file it cannot read is a ConfigError naming it
    if named and args.labels_last:
        raise ParameterError(
            f"--input {args.input} names its columns: give the label column with --label, "
            "not --labels-last"
        )
    if not named and args.label:
        raise ParameterError(
            f"--input {args.input} has no header: --label needs named columns (use --labels-last)"
        )
    x, y = (None, None) if named else read_query_csv(args.input, labels_last=args.labels_last)
    if args.output:
        _check_output_file(Path(args.output))
    tls = TlsPaths(Path(args.cert), Path(args.key), Path(args.ca))
    progress = ProgressPrinter(per_node=args.verbose)
    querier = Querier(args.root, tls, args.params, name=args.name, on_event=progress)
    try:
        run, job = querier.model_info(new_job_id(), args.model)
        if named:  # the model's columns, by name, in its order
            from phe_fl.federation.data import load_samples

            schema = run.schema
            x, y = load_samples(
                args.input,
                schema.features if schema is not None else None,
                label=args.label,
                classes=schema.classes if schema is not None and schema.classes else None,
            )
        assert x is not None
        check_query_width(x, job.n_features, args.input, labels_last=args.labels_last)
        scores = querier.predict(new_job_id(), run, job, x, on_rows=progress.rows)
    finally:
        querier.close()
    classes = run.schema.classes if run.schema is not None else ()
    fmt = args.format or ("json" if str(args.output).lower().endswith(".json") else "csv")
    if not isinstance(job, TrainingJob):  # a network: one score per class
        return _network_predictions(args, fmt, scores, y, classes)
    names = list(classes) if len(classes) == 2 else ["0", "1"]  # the nodes' declared labels
    if fmt == "json":
        import json

        records = [
            {"row": i, "score": round(float(s), 6), "label": names[int(s >= 0.5)]}
            for i, s in enumerate(scores)
        ]
        text = json.dumps({"model": args.model, "predictions": records}, indent=1) + "\n"
    else:
        lines = ["row,score,label"] + [
            f"{i},{s:.4f},{names[int(s >= 0.5)]}" for i, s in enumerate(scores)
        ]
        text = "\n".join(lines) + "\n"
    return _predictions_out(args, text, len(scores), None if y is None else (scores >= 0.5) == y)


def _predictions_out(
    args: argparse.Namespace, text: str, n_rows: int, correct: FloatArray | None
) -> int:
    """Predictions to ``--output`` (or stdout); the accuracy, with labels, to stderr."""
    if args.output:
        _write_result(Path(args.output), text)
        print(f"wrote {n_rows} prediction(s) to {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    if correct is not None:
        print(f"accuracy {float(correct.mean()):.4f} on {len(correct)} rows", file=sys.stderr)
    return 0


def _network_predictions(
    args: argparse.Namespace,
    fmt: str,
    scores: FloatArray,
    y: FloatArray | None,
    classes: Sequence[str],
) -> int:
    """A network's predictions: each row's class (the largest score) and every score."""
    n_classes = scores.shape[1]
    names = list(classes) if len(classes) == n_classes else [str(c) for c in range(n_classes)]
    labels = scores.argmax(axis=1)
    if fmt == "json":
        import json

        records = [
            {
                "row": i,
                "label": names[int(k)],
                "scores": {n: round(float(v), 6) for n, v in zip(names, row, strict=True)},
            }
            for i, (k, row) in enumerate(zip(labels, scores, strict=True))
        ]
        text = json.dumps({"model": args.model, "predictions": records}, indent=1) + "\n"
    else:
        lines = ["row,label," + ",".join(f"score_{n}" for n in names)]
        lines += [
            f"{i},{names[int(k)]}," + ",".join(f"{v:.4f}" for v in row)
            for i, (k, row) in enumerate(zip(labels, scores, strict=True))
        ]
        text = "\n".join(lines) + "\n"
    return _predictions_out(args, text, len(scores), None if y is None else labels == y)


def _querier_connection(parser: argparse.ArgumentParser) -> None:
    """How a querier reaches the root: address, its mTLS identity, the federation CA. Each
    defaults to an environment variable (a querier kit's ``querier.env`` sets them)."""
    options = (
        ("--root", "PHE_FL_ROOT", "root node address host:port"),
        ("--cert", "PHE_FL_CERT", "this querier's certificate (PEM)"),
        ("--key", "PHE_FL_KEY", "this querier's private key (PEM)"),
        ("--ca", "PHE_FL_CA", "the federation CA certificate (PEM)"),
    )
    for flag, env, help_text in options:
        default = os.environ.get(env) or None
        parser.add_argument(
            flag, default=default, required=default is None, help=f"{help_text}; default ${env}"
        )
    parser.add_argument(
        "--name",
        default=os.environ.get("PHE_FL_NAME") or "querier",
        help="querier id in its certificate; default $PHE_FL_NAME, else querier",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phe-fl")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from phe_fl import __version__

        return __version__


def _provisioning_commands(sub: Any) -> None:
    """provision, ca, csr, preflight: from a federation description to running sites."""
    prov = sub.add_parser(
        "provision",
        help="write one startup kit per site and querier from a federation description "
        "(no private key in any kit)",
    )
    prov.add_argument("--federation", required=True, help="the federation description (TOML)")
    prov.add_argument("--out", required=True, help="folder for the kits (one sub-folder each)")
    prov.add_argument(
        "--ca",
        required=True,
        help="the CA folder (ca.pem, ca.key); created there if it holds no CA yet",
    )
    prov.add_argument(
        "--overwrite",
        action="store_true",
        help="rewrite the generated files of existing kits (keys, certificates, state kept)",
    )
    prov.set_defaults(func=_cmd_provision)

    ca = sub.add_parser("ca", help="the federation CA operator: create the CA, sign requests")
    ca.add_argument("action", choices=["init", "sign"], help="init: create the CA; sign: a CSR")
    ca.add_argument("--ca", required=True, help="the CA folder (ca.pem, ca.key)")
    ca.add_argument("--csr", help="sign: the member's signing request (.csr)")
    ca.add_argument("--out", help="sign: where to write the certificate (.pem)")
    ca.add_argument(
        "--federation",
        help="sign: the federation description; the request must name a declared member and "
        "only its declared hosts",
    )
    ca.add_argument(
        "--days",
        type=_positive_int,
        default=None,
        help="sign: validity in days (default: the description's days, else 365)",
    )
    ca.add_argument("--overwrite", action="store_true", help="replace existing files")
    ca.set_defaults(func=_cmd_ca)

    csr = sub.add_parser(
        "csr",
        help="at a site or querier: make its private key and signing request in its kit, or "
        "install the certificate the CA operator sent back",
    )
    csr.add_argument("--kit", required=True, help="the kit folder (holds kit.toml)")
    csr.add_argument(
        "--install", metavar="CERT", help="check this certificate and install it in the kit"
    )
    csr.set_defaults(func=_cmd_csr)

    pre = sub.add_parser(
        "preflight",
        help="check a node's config, files, permissions, certificate, parent and data before "
        "starting it (exit 1 on any error)",
    )
    pre.add_argument("--config", required=True, help="the node's TOML file")
    pre.add_argument("--no-network", action="store_true", help="do not try to reach the parent")
    pre.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=3.0,
        help="seconds to wait for the parent (default 3)",
    )
    pre.set_defaults(func=_cmd_preflight)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="phe-fl", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"phe-fl {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="start a federation of N node processes on this machine and query it"
    )
    demo.add_argument(
        "--providers",
        type=_int_at_least(2, "a federation needs at least two data providers"),
        default=5,
        help="number of data providers (default 5)",
    )
    demo.add_argument(
        "--params", default="n15-depth11-128", help="parameter set (see `phe-fl params`)"
    )
    demo.add_argument("--iterations", type=_positive_int, default=10, help="training iterations")
    demo.add_argument(
        "--model",
        choices=["logistic", "mlp"],
        default="logistic",
        help="logistic regression, or a 30-8-2 MLP trained with its weights encrypted",
    )
    demo.set_defaults(func=_cmd_demo)
    params = sub.add_parser("params", help="list the named parameter sets")
    params.set_defaults(func=_cmd_params)
    certs = sub.add_parser(
        "certs",
        help="create a federation CA and member certificates for mutual TLS, or add a member",
    )
    certs.add_argument("--out", required=True, help="output folder (the federation folder)")
    certs.add_argument("--nodes", help="comma-separated node ids, e.g. 0,1,2,3,4")
    certs.add_argument(
        "--queriers", help="comma-separated querier ids (default: querier; empty for none)"
    )
    add = certs.add_mutually_exclusive_group()
    add.add_argument("--add-node", metavar="ID", help="issue one more node certificate")
    add.add_argument("--add-querier", metavar="ID", help="issue one more querier certificate")
    certs.add_argument("--ca", help="folder holding ca.pem and ca.key for --add-* (default: --out)")
    certs.add_argument(
        "--hosts",
        default="localhost,127.0.0.1",
        help="comma-separated DNS names / IP addresses the certificates are valid for",
    )
    certs.add_argument(
        "--days", type=_positive_int, default=365, help="validity in days (default 365)"
    )
    certs.add_argument("--overwrite", action="store_true", help="replace existing files")
    certs.set_defaults(func=_cmd_certs)
    node = sub.add_parser("node", help="run one data-provider node from its TOML config")
    node.add_argument("--config", required=True, help="the node's TOML file (see nodes/)")
    node.add_argument(
        "--deadline",
        type=_positive_seconds,
        default=600.0,
        help="seconds a child may take per step (default 600)",
    )
    node.add_argument(
        "--log-level",
        default=os.environ.get("PHE_FL_LOG_LEVEL") or "INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="lowest level logged (default $PHE_FL_LOG_LEVEL, else INFO)",
    )
    node.add_argument(
        "--log-format",
        default=os.environ.get("PHE_FL_LOG_FORMAT") or "text",
        choices=["text", "json"],
        help="text lines, or one JSON object per line for log shippers; every line names "
        "the node, the job and the peer (default $PHE_FL_LOG_FORMAT, else text)",
    )
    node.set_defaults(func=_cmd_node)
    query = sub.add_parser("query", help="as a querier, run a job on the federation's root")
    query.add_argument(
        "job",
        choices=["setup", "status", "stats", "train", "model", "fedavg"],
        help="setup: collective keys; status: which nodes are connected; stats: pooled "
        "feature statistics readable by this querier only; train: a GLM (logistic, "
        "linear) or a network (--model mlp or multinomial) with the model kept encrypted; "
        "model: "
        "decrypt a trained model (every node's policy must allow it); fedavg: every node "
        "trains its own app locally, only the sum of the updates is decrypted",
    )
    _querier_connection(query)
    query.add_argument(
        "--params", default=None, help="parameter set (default: ask the root for the federation's)"
    )
    query.add_argument(
        "--rotations", type=_rotation_steps, default=[], help="setup: rotation steps, e.g. 1,2,4"
    )
    query.add_argument(
        "--features", type=_positive_int, default=30, help="stats, train: number of features"
    )
    query.add_argument("--job-id", default="", help="job id (default: random)")
    query.add_argument(
        "--iterations", type=_positive_int, help="train: iterations (default: the job's, 10)"
    )
    query.add_argument(
        "--learning-rate",
        type=_positive_float,
        help="train: learning rate (default 0.2); fedavg: local learning rate (0.05)",
    )
    query.add_argument(
        "--batch-size",
        type=_positive_int,
        help="train: samples per node and iteration (16); fedavg: local batch size (32)",
    )
    query.add_argument(
        "--degree", type=_positive_int, help="train: sigmoid polynomial degree (default 5)"
    )
    query.add_argument(
        "--bound",
        type=_positive_float,
        help="train: half-width a of the sigmoid's fit interval [-a, a] (default 10)",
    )
    query.add_argument(
        "--margin-check-every",
        type=_int_at_least(0),
        default=0,
        help="train: the consented margin check every K iterations (needs every node's "
        "allow_decryption; a DP job whose margins leave the interval stops); 0: none",
    )
    query.add_argument(
        "--feature-clip",
        type=_clip,
        help="train: bound every standardized feature to [-c, c] (default 4; inf: none)",
    )
    query.add_argument(
        "--model",
        default="",
        help="train: the model, logistic (default), linear, multinomial or mlp; model: the "
        "training job id to decrypt",
    )
    query.add_argument(
        "--hidden",
        type=_widths,
        default=[],
        help="train --model mlp: hidden layer widths, e.g. 64,64",
    )
    query.add_argument(
        "--classes", type=_int_at_least(2), help="train a network: number of classes (2)"
    )
    query.add_argument(
        "--tile",
        type=_positive_int,
        help="train a network: side of its square weight tiles, a power of two (default: "
        "the side whose iteration costs fewest operations for the batch)",
    )
    query.add_argument(
        "--momentum", type=_unit_interval, help="train: momentum in [0, 1) (0: none)"
    )
    query.add_argument(
        "--nesterov",
        action="store_true",
        help="train: Nesterov's momentum instead of heavy ball",
    )
    query.add_argument(
        "--allow-model-decryption",
        action="store_true",
        help="train a network: the querier's consent to decrypt the model later (each node's "
        "policy decides too)",
    )
    query.add_argument("--app", default="", help="fedavg: the app every node declares")
    query.add_argument("--rounds", type=_positive_int, help="fedavg: rounds (default 5)")
    query.add_argument(
        "--epochs", type=_positive_int, help="fedavg: local epochs per round (default 1)"
    )
    query.add_argument(
        "--seed",
        type=_int_at_least(0),
        help="fedavg: initialization and shuffling seed; train a network: its initial weights' (0)",
    )
    query.add_argument(
        "--output", default="", help="fedavg: save the final model (.npz, or .pt for torch)"
    )
    query.add_argument(
        "--dp-noise-multiplier",
        type=_positive_float,
        help="train, fedavg: differentially private training with this noise multiplier "
        "sigma (Gaussian noise sigma * C on each batch's sum, added in shares under encryption)",
    )
    query.add_argument(
        "--dp-clip",
        type=_positive_float,
        help="train: bound on each row's L2 norm; fedavg: on each example's gradient (1)",
    )
    query.add_argument(
        "--dp-sample-rate",
        type=_positive_float,
        help="fedavg with DP: each row joins a round's batch with this probability",
    )
    query.add_argument("-v", "--verbose", action="store_true", help="per-node time and bytes")
    query.add_argument(
        "--detach",
        action="store_true",
        help="train: return once the root accepted the job (follow it with `jobs watch`)",
    )
    query.set_defaults(func=_cmd_query)
    jobs = sub.add_parser(
        "jobs", help="as a querier, list, follow, re-attach to or cancel your jobs at the root"
    )
    jobs.add_argument(
        "action",
        choices=["list", "status", "watch", "cancel"],
        help="list: your jobs; status: one job's record; watch: follow it until it ends; "
        "cancel: stop it",
    )
    jobs.add_argument("job_id", nargs="?", default="", help="the job (status, watch, cancel)")
    _querier_connection(jobs)
    jobs.add_argument(
        "--params", default=None, help="parameter set (default: ask the root for the federation's)"
    )
    jobs.add_argument("-v", "--verbose", action="store_true", help="per-node time and bytes")
    jobs.set_defaults(func=_cmd_jobs)
    models = sub.add_parser("models", help="as a querier, list the trained models at the root")
    models.add_argument("action", choices=["list"], help="list: the trained models at the root")
    _querier_connection(models)
    models.add_argument(
        "--params", default=None, help="parameter set (default: ask the root for the federation's)"
    )
    models.set_defaults(func=_cmd_models)
    audit = sub.add_parser(
        "audit", help="check a node's audit log, or measure membership inference on a model"
    )
    audit_sub = audit.add_subparsers(dest="action", required=True)
    verify = audit_sub.add_parser("verify", help="check a node's audit log (its hash chain)")
    verify.add_argument("file", help="the node's audit.jsonl (in its state dir)")
    verify.set_defaults(func=_cmd_audit)
    from phe_fl.privacy.cli import add_membership_parser

    add_membership_parser(audit_sub)
    pred = sub.add_parser(
        "predict",
        help="as a querier, get predictions of a trained (encrypted) model on your own samples;"
        " they leave this process encrypted and only you can read the scores",
    )
    _querier_connection(pred)
    pred.add_argument(
        "--params", default=None, help="parameter set (default: ask the root for the federation's)"
    )
    pred.add_argument("--model", required=True, help="the training job id of the model")
    pred.add_argument(
        "--input",
        required=True,
        help="samples, one row each: a CSV (with a header, its columns are picked by the "
        "model's feature names; without, features in the model's order) or a Parquet file",
    )
    pred.add_argument(
        "--label",
        help="with named columns: the column holding the true labels (reports accuracy)",
    )
    pred.add_argument(
        "--labels-last",
        action="store_true",
        help="without a header: the CSV's last column is a label (reports accuracy)",
    )
    pred.add_argument(
        "--output", help="write the predictions to this file instead of stdout (written whole)"
    )
    pred.add_argument(
        "--format",
        choices=["csv", "json"],
        help="csv (row,score,label) or json; default: json for a .json --output, else csv",
    )
    pred.add_argument("-v", "--verbose", action="store_true", help="per-node time and bytes")
    pred.set_defaults(func=_cmd_predict)
    _provisioning_commands(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PheFlError as exc:  # before OSError: PolicyError and PeerError are OSErrors too
        print(f"phe-fl: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing certificate, a folder given for a file, no permission
        print(f"phe-fl: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phe-fl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
