"""Encrypted FedAvg for any PyTorch model: each site trains locally with its own code (its
app), updates are summed under the collective key, and only the sum is decrypted.

Sites declare apps in their node config (``[fedavg] apps``); a querier runs
:meth:`phe_fl.Querier.fedavg` with a :class:`FedAvgSpec`. torch is needed only where an
app runs (the ``torch`` extra).
"""

from phe_fl.fedavg.app import App, EvalResult, FitConfig, FitResult, load_app
from phe_fl.fedavg.job import FedAvgSpec

__all__ = ["App", "FitConfig", "FitResult", "EvalResult", "FedAvgSpec", "load_app"]
