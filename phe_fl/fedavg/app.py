"""The contract between a node and the institution's own training code (its *app*).

A site declares its apps in its node config (``[fedavg] apps = { name = "module:attr" }``);
the attribute is a factory called with the site's ``[fedavg] options`` (where its data
is, which device to use) that returns an :class:`App`. The querier's job names an app
and its hyperparameters; nothing executable ever travels over the wire. The shape is
Flower's ClientApp: a model factory, a local-training function, an evaluation function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from phe_fl.errors import ConfigError

if TYPE_CHECKING:  # torch is the ``torch`` extra; only an app's node imports it
    import torch

__all__ = ["App", "AppFactory", "FitConfig", "FitResult", "EvalResult", "load_app"]


@dataclass(frozen=True)
class FitConfig:
    """What the job asks of one round of local training."""

    round: int  # 1-based
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int  # the job's seed; an app mixes it with the round and its shard


@dataclass(frozen=True)
class FitResult:
    """What local training reports: the update is weighted by ``examples``."""

    examples: int
    loss: float = 0.0  # mean training loss of the last local epoch


@dataclass(frozen=True)
class EvalResult:
    loss: float
    examples: int
    accuracy: float | None = None


class App(Protocol):
    """One institution's training code for one model."""

    def model(self) -> torch.nn.Module:
        """A fresh model (the root's becomes the first global model)."""
        ...

    def fit(self, model: torch.nn.Module, config: FitConfig) -> FitResult:
        """Train ``model`` in place on this site's data."""
        ...

    def evaluate(self, model: torch.nn.Module) -> EvalResult:
        """Evaluate ``model`` on this site's held-out data."""
        ...


AppFactory = Callable[[Mapping[str, Any]], App]


def load_app(name: str, entry: str, options: Mapping[str, Any]) -> App:
    """The app ``name`` declared as ``entry`` (``module:attribute``), built with
    ``options``; a ConfigError names what is wrong."""
    module_name, sep, attribute = entry.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"app {name!r}: entry {entry!r} is not 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"app {name!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"app {name!r}: {entry!r} is not a callable in {module_name!r}")
    try:
        app = factory(dict(options))
    except Exception as exc:  # noqa: BLE001 - the site's code: report it, naming the app
        raise ConfigError(f"app {name!r}: {entry} failed: {type(exc).__name__}: {exc}") from None
    for method in ("model", "fit", "evaluate"):
        if not callable(getattr(app, method, None)):
            raise ConfigError(f"app {name!r}: {entry} returned an object without {method}()")
    return app  # type: ignore[no-any-return]
