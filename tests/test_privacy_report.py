"""Subject report (read-only on the xs lake) and retention (on a private copy)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml
from conftest import XS_AS_OF, copy_lake, crm_customer_key
from pyspark.sql import functions as F

from lakehouse.asof import future_date_problem
from lakehouse.catalog import Catalog
from lakehouse.errors import ConfigError, InputDataError, SubjectNotFoundError
from lakehouse.pipeline import RunContext
from lakehouse.privacy.retention import run_retention
from lakehouse.privacy.subject_report import load_usage, subject_report, write_report_json

REPO = Path(__file__).resolve().parents[1]
USAGE = yaml.safe_load((REPO / "conf" / "data_usage.yaml").read_text())["tables"]


def _customer_with_orders(spark, cfg) -> str:
    """A customer id (from the raw orders file) who has orders and a CRM record."""
    raw = Path(cfg.data_dir) / "raw" / "orders"
    ids = [line.split(",")[1] for p in sorted(raw.glob("*.csv"))
           for line in p.read_text().splitlines()[1:] if line.count(",") >= 6]
    keys = {r[0] for r in Catalog(cfg).read(spark, "silver.customers").select("customer_key").collect()}
    return next(i for i in ids if crm_customer_key(i) in keys)


def test_subject_report_lists_tables_purposes_consent_and_lineage(spark, xs_lake, tmp_path):
    customer_id = _customer_with_orders(spark, xs_lake)
    report = subject_report(spark, xs_lake, customer_id)
    catalog = Catalog(xs_lake)
    key = crm_customer_key(customer_id)
    tables = {t["table"]: t for t in report["tables"]}
    # Expected from the tables themselves, by the documented key.
    for name in ("silver.customers", "silver.customer_pii", "silver.orders", "gold.customer_360"):
        rows = catalog.read(spark, name).where(F.col("customer_key") == key).count()
        assert tables[name]["rows"] == rows, name
        assert tables[name]["purposes"] == USAGE[name]["purposes"]
    assert "email" in tables["silver.customer_pii"]["columns"]
    assert "bronze.crm_customers" in tables and "bronze.orders" in tables
    customer = catalog.read(spark, "silver.customers").where(F.col("customer_key") == key).first()
    assert report["consent"]["marketing_consent"] == customer["marketing_consent"]
    raw_crm = [f for f in report["lineage"]["raw_files"] if f.startswith("crm_customers/")]
    raw_with_id = sorted(
        p.relative_to(Path(xs_lake.data_dir) / "raw").as_posix()
        for p in (Path(xs_lake.data_dir) / "raw" / "crm_customers").glob("*.csv")
        if customer_id in p.read_text()
    )
    assert raw_crm == raw_with_id
    assert report["lineage"]["bronze_source_files"]
    out = tmp_path / "report.json"
    write_report_json(report, str(out))
    assert json.loads(out.read_text())["customer_id"] == customer_id


def test_subject_report_of_unknown_person_is_one_clear_error(spark, xs_lake):
    with pytest.raises(SubjectNotFoundError, match="no data held"):
        subject_report(spark, xs_lake, "C9999999")


def test_show_and_subject_report_read_a_lake_they_may_not_write(spark, xs_lake, monkeypatch, capsys):
    """Both only read: a lake on a read-only mount, or another user's, is theirs to read (as it
    is history's). Permission bits do not bind root, so the data root is made unwritable where
    a command would see it: in os.access."""
    import os

    from lakehouse.cli import main

    root = os.path.realpath(xs_lake.data_dir)
    access = os.access

    def read_only_lake(path, mode, *args, **kwargs):
        inside = os.path.commonpath([root, os.path.realpath(path)]) == root
        return not (inside and mode & os.W_OK) and access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", read_only_lake)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", xs_lake.data_dir)
    customer_id = _customer_with_orders(spark, xs_lake)
    assert main(["show", "gold.customer_360", "--role", "analyst", "--limit", "1"]) == 0
    assert main(["subject-report", "--customer-id", customer_id]) == 0
    out, err = capsys.readouterr()
    assert "customer_key" in out and f"subject report for customer {customer_id}" in out, err


@pytest.fixture(scope="module")
def retained(spark, xs_lake, tmp_path_factory):
    cfg = copy_lake(xs_lake, tmp_path_factory.mktemp("retention") / "lake")
    catalog = Catalog(cfg)
    customers = catalog.read(spark, "silver.customers").toPandas()
    journeys = catalog.read(spark, "gold.journeys").toPandas()
    lines = run_retention(spark, cfg, RunContext(run_id="t", as_of=date.fromisoformat(XS_AS_OF)))
    return cfg, customers, journeys, lines


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (["x"], "tables must be a mapping of table: usage, got list ['x']"),
        ({"silver.orders": "sales"},
         "tables.silver.orders must be a mapping (purposes, basis, retention), got str 'sales'"),
        ({"silver.orders": {"purposes": [1]}},
         "tables.silver.orders.purposes must be a purpose or a list of purposes, got list [1]"),
        ({"silver.orders": {"basis": ["contract"]}},
         "tables.silver.orders.basis must be a string, got list ['contract']"),
    ],
)
def test_a_data_usage_entry_of_the_wrong_type_is_one_clear_error(tmp_path, tables, message):
    # `tables: [x]` was an AttributeError once the report had scanned the lake.
    import shutil

    from lakehouse.config import DEFAULT_CONF_DIR, load_config

    conf = tmp_path / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, conf)
    (conf / "data_usage.yaml").write_text(yaml.safe_dump({"tables": tables}))
    with pytest.raises(ConfigError) as raised:
        load_usage(load_config("local", conf))
    assert str(raised.value) == f"{conf}/data_usage.yaml: {message}"


def test_retention_erases_customers_past_their_expiry(spark, retained):
    cfg, customers, _, lines = retained
    cutoff = date.fromisoformat(XS_AS_OF)
    expired = set(customers.loc[customers["data_expiry_date"].map(
        lambda d: d is not None and d == d and d < cutoff), "customer_key"])
    catalog = Catalog(cfg)
    for name in ("silver.customers", "silver.customer_pii", "gold.customer_360"):
        left = {r[0] for r in catalog.read(spark, name).select("customer_key").collect()}
        assert not (left & expired), name
    kept = set(customers["customer_key"]) - expired
    assert {r[0] for r in catalog.read(spark, "silver.customers").select("customer_key")
            .collect()} == kept
    assert any("retention" in line for line in lines)


def test_retention_refuses_a_run_date_after_today(spark, config):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    assert future_date_problem(today, today=today) is None
    assert "2026-01-02 is after today (2026-01-01, UTC)" in future_date_problem(
        date(2026, 1, 2), today=date(2026, 1, 1))
    with pytest.raises(InputDataError, match="after today.*nobody was erased"):
        run_retention(spark, config, RunContext(run_id="t", as_of=today + timedelta(days=1)))


def test_retention_keeps_marketing_outputs_to_consenting_customers(spark, retained):
    cfg, customers, journeys, _ = retained
    consenting = set(customers.loc[customers["marketing_consent"] == True, "customer_key"])  # noqa: E712
    expired = set(customers.loc[customers["data_expiry_date"].map(
        lambda d: d is not None and d == d and d < date.fromisoformat(XS_AS_OF)), "customer_key"])
    expected = journeys[journeys["customer_key"].isin(consenting - expired)]
    after = Catalog(cfg).read(spark, "gold.journeys").toPandas()
    assert sorted(after["journey_id"]) == sorted(expected["journey_id"])


def _crm_lines_and_expired_keys(spark, cfg, as_of: date):
    """(raw CRM folder, its header, its well-formed lines as dicts, the customer_keys of silver
    whose data-expiry date is before ``as_of``)."""
    customers = Catalog(cfg).read(spark, "silver.customers").toPandas()
    expired_keys = set(customers.loc[customers["data_expiry_date"].map(
        lambda d: d is not None and d == d and d < as_of), "customer_key"])
    raw = Path(cfg.data_dir) / "raw" / "crm_customers"
    header = sorted(raw.glob("*.csv"))[0].read_text().splitlines()[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True))
            for p in sorted(raw.glob("*.csv")) for line in p.read_text().splitlines()[1:]
            if line.count(",") == len(header) - 1]
    return raw, header, rows, expired_keys


def test_retention_takes_only_the_expired_and_the_next_run_completes_a_crashed_one(
        spark, xs_lake, tmp_path):
    """Two defects. A customer sharing an email with an expired one (a second account) was
    erased with them in every layer: retention resolved its subject by email, as an erasure
    request by a person does. And a run killed after deleting the rows was never completed:
    the next found nobody expired, so the older versions still held them (no VACUUM)."""
    from lakehouse.pipeline import run_stages
    from lakehouse.privacy.erasure import ERASURE_LOG, _SimulatedCrash

    cfg = copy_lake(xs_lake, tmp_path / "lake")
    catalog = Catalog(cfg)
    as_of = date.fromisoformat(XS_AS_OF)
    raw, header, rows, expired_keys = _crm_lines_and_expired_keys(spark, cfg, as_of)
    expired = next(r for r in rows if crm_customer_key(r["customer_id"]) in expired_keys
                   and "@" in r["email"])
    second = {**expired, "customer_id": "C0999999", "data_expiry_date": "2099-12-31",
              "marketing_consent": "true", "updated_at": "2026-01-03T12:00:00Z"}
    (raw / "crm_customers_2026-01-04.csv").write_text(
        ",".join(header) + "\n" + ",".join(second[c] for c in header) + "\n")
    ctx = RunContext(run_id="second-account", as_of=as_of)
    for stage in ("bronze", "silver"):
        run_stages(spark, cfg, stage, ctx, echo=lambda line: None)
    second_key, expired_key = crm_customer_key("C0999999"), crm_customer_key(expired["customer_id"])
    before = catalog.current_version(spark, "silver.customers")

    def keys(name: str, version: int | None = None) -> set[str]:
        df = catalog.read(spark, name, version=version)
        return {r[0] for r in df.select("customer_key").collect()}

    assert {second_key, expired_key} <= keys("silver.customers")
    with pytest.raises(_SimulatedCrash):
        run_retention(spark, cfg, RunContext(run_id="r1", as_of=as_of), stop_after="aggregates")
    assert expired_key not in keys("silver.customers")
    assert expired_key in keys("silver.customers", before)  # not vacuumed yet
    lines = run_retention(spark, cfg, RunContext(run_id="r2", as_of=as_of))
    assert any("interrupted run's request" in line for line in lines), lines
    log = catalog.read(spark, ERASURE_LOG).toPandas()
    assert set(log.loc[log["status"] == "complete", "request_id"]) == set(log["request_id"])
    try:
        still_held = expired_key in keys("silver.customers", before)
    except Exception:  # noqa: BLE001 - its files are vacuumed: the old version cannot be read
        still_held = False
    assert not still_held
    for name in ("silver.customers", "silver.customer_pii"):
        assert second_key in keys(name), name
    crm = catalog.read(spark, "bronze.crm_customers")
    assert crm.where(F.trim("customer_id") == "C0999999").count() == 1
    assert "C0999999" in (raw / "crm_customers_2026-01-04.csv").read_text()


def test_retention_is_refused_while_silver_has_not_read_a_crm_update(spark, xs_lake, tmp_path):
    """An expired customer renews (a later data-expiry date): bronze has landed the record,
    silver has not read it yet. Retention read silver only and erased them for good; now it
    is refused, touching nothing, until silver has run."""
    from lakehouse.pipeline import run_stages
    from lakehouse.privacy.retention import check_crm_read_by_silver

    cfg = copy_lake(xs_lake, tmp_path / "lake")
    catalog = Catalog(cfg)
    as_of = date.fromisoformat(XS_AS_OF)
    raw, header, rows, expired_keys = _crm_lines_and_expired_keys(spark, cfg, as_of)
    expired = next(r for r in rows if crm_customer_key(r["customer_id"]) in expired_keys)
    renewed = {**expired, "data_expiry_date": "2099-12-31", "updated_at": "2026-01-03T23:00:00Z"}
    (raw / "crm_customers_2026-01-04.csv").write_text(
        ",".join(header) + "\n" + ",".join(renewed[c] for c in header) + "\n")
    ctx = RunContext(run_id="renewal", as_of=as_of)
    run_stages(spark, cfg, "bronze", ctx, echo=lambda line: None)
    lake = Path(cfg.data_dir) / "lake"
    before = {p: p.stat().st_size for p in lake.rglob("*") if p.is_file()}
    with pytest.raises(InputDataError, match="silver has not read yet.*run `lakehouse run "
                                             "silver` first; nobody was erased"):
        run_retention(spark, cfg, RunContext(run_id="r", as_of=as_of))
    assert {p: p.stat().st_size for p in lake.rglob("*") if p.is_file()} == before
    run_stages(spark, cfg, "silver", ctx, echo=lambda line: None)
    check_crm_read_by_silver(spark, cfg)  # read now: retention would run, and keep them
    key = crm_customer_key(expired["customer_id"])
    profile = catalog.read(spark, "silver.customers").where(F.col("customer_key") == key)
    assert [str(r[0]) for r in profile.select("data_expiry_date").collect()] == ["2099-12-31"]
