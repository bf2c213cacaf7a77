"""Faulty FedAvg apps for tests: a site's own code that raises, or that returns a model
whose tensors changed shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from phe_fl.fedavg.app import App, FitConfig, FitResult
from phe_fl.fedavg.examples import digits_mlp


class _Raising:
    def __init__(self, inner: App) -> None:
        self.inner = inner

    def model(self) -> nn.Module:
        return self.inner.model()

    def fit(self, model: nn.Module, config: FitConfig) -> FitResult:
        raise ValueError("the site's disk is full")

    def evaluate(self, model: nn.Module) -> Any:
        return self.inner.evaluate(model)


class _Reshaping(_Raising):
    def fit(self, model: nn.Module, config: FitConfig) -> FitResult:
        """Replace the last layer with a wider one: the update no longer fits the job."""
        last = max(name for name, child in model.named_children())
        setattr(model, last, nn.Linear(32, 12))
        return FitResult(examples=10, loss=0.0)


def raising(options: Mapping[str, Any]) -> App:
    return _Raising(digits_mlp(options))


def reshaping(options: Mapping[str, Any]) -> App:
    return _Reshaping(digits_mlp(options))
