"""A site's memory of its FedAvg jobs."""

from __future__ import annotations

import pytest

from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import values_digest
from phe_fl.fedavg.site import JOBS_KEPT, Site

EXAMPLE = "phe_fl.fedavg.examples:digits_mlp"


def test_a_site_keeps_the_latest_jobs_only_and_prepares_an_old_one_again() -> None:
    site = Site("s", {"digits": EXAMPLE}, {"rows": 50, "threads": 1})
    spec = FedAvgSpec("digits", rounds=1)
    for i in range(JOBS_KEPT + 2):
        site.prepare(f"job-{i}", spec)
    assert list(site._jobs) == [f"job-{i}" for i in range(2, JOBS_KEPT + 2)]
    with pytest.raises(Exception, match="not prepared"):
        site.job("job-0")
    site.prepare("job-0", spec)  # asked again (FedAvgParty does before every step)
    values = site.initial("job-0")
    site.receive_global("job-0", 1, 0, values.astype("<f4").tobytes())
    update, result = site.fit("job-0", 1, values_digest(values))
    assert update.size == values.size and result.examples == 50
