"""The shipped Grafana dashboard (ops/grafana/hotline.json) asks only for metrics the platform exports,
and shows every one of them."""

from __future__ import annotations

import json
import re

from cli.metrics import ASTERISK_METRICS
from core.metrics import SERVICE_METRICS
from core.settings import REPO_ROOT

NAME = re.compile(r"\b(?:hotline|asterisk)_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _family(sample: str, families: set[str]) -> str | None:
    if sample in families:
        return sample
    for suffix in SUFFIXES:
        if sample.endswith(suffix) and sample[: -len(suffix)] in families:
            return sample[: -len(suffix)]
    return None


def test_every_dashboard_query_names_an_exported_metric_and_every_metric_is_shown():
    dashboard = json.loads((REPO_ROOT / "ops" / "grafana" / "hotline.json").read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    exported = {metric._name for metrics in SERVICE_METRICS.values() for metric in metrics}
    used = set()
    for expr in exprs:
        names = NAME.findall(expr)
        assert names or expr.startswith("up{"), expr
        for name in names:
            if name.startswith("asterisk_"):
                assert name in ASTERISK_METRICS, f"{expr}: {name} is not among res_prometheus's checked figures"
                continue
            family = _family(name, exported)
            assert family, f"{expr}: {name} is not exported by any service"
            used.add(family)
    assert exported - used == set(), "exported but not on the dashboard"
