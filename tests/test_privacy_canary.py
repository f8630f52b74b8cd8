"""Secrets: the run's pseudonymisation key, planted as a canary (conftest.CANARY_KEY, the key of
every lake of the test run), appears in no log and no written file of a full run: the `run all` submitted to a
standalone cluster (conftest.cluster_run), whose driver holds the key, with the Spark event log
on (it records every Spark and system property of the run). Searched: what the run printed, its
data root (tables, checkpoints, MLflow, lineage), the event log, and the cluster's daemon and
executor logs.

That bronze and silver run again after an erasure without bringing the person back is in
tests/test_erasure.py."""

from __future__ import annotations

import re

from conftest import CANARY_KEY

from lakehouse.config import load_config
from lakehouse.pipeline import STAGE_ORDER
from lakehouse.session import REDACTION_REGEX


def test_redaction_pattern_covers_the_key_variable():
    name = load_config("local").get("privacy.pseudonym_key_env")
    assert re.search(REDACTION_REGEX, name)


def test_run_all_reports_every_stage(cluster_run):
    text = cluster_run.submitted.stdout
    for stage in STAGE_ORDER:
        assert f"[{stage}] done in" in text, f"run all printed no summary for {stage}"
    assert "gold.customer_360" in text and "gold.journeys" in text


def test_canary_key_is_in_no_log_and_no_file(cluster_run):
    out = cluster_run.submitted
    assert CANARY_KEY not in out.stdout and CANARY_KEY not in out.stderr
    needle = CANARY_KEY.encode()
    files = [p for p in cluster_run.root.rglob("*") if p.is_file()]
    # The search covered what the run wrote: MLflow, the event log, executor logs.
    assert any("mlflow" in p.parts for p in files), "the run wrote MLflow files"
    # The event log is searchable text (uncompressed) and records the run's properties. It
    # rolls over into a further file at 128 MiB (events_1_..., events_2_...), listed in any order.
    events = [p for p in files if "eventlog" in p.parts and p.name.startswith("events_")]
    assert events, "the run wrote a Spark event log"
    assert any(b"SparkListenerEnvironmentUpdate" in p.read_bytes() for p in events)
    assert any(p.name == "stderr" and "worker" in p.parts for p in files), (
        "the cluster wrote executor logs")
    assert [str(p) for p in files if needle in p.read_bytes()] == []
