"""Erasure: after erase + VACUUM no byte of the person is left anywhere under the data root."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import copy_lake, crm_customer_key
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.errors import SubjectNotFoundError
from lakehouse.pipeline import RunContext, run_stages
from lakehouse.privacy.erasure import ERASURE_LOG, _SimulatedCrash, erase_subject


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _files_containing(root: Path, needle: str) -> list[str]:
    wanted = needle.lower().encode()
    return [str(p.relative_to(root)) for p in _all_files(root) if wanted in p.read_bytes().lower()]


def _raw_lines(root: Path) -> list[str]:
    return [line for p in (root / "raw").rglob("*") if p.is_file()
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines()]


def _pick_person(spark, cfg) -> dict:
    """A customer from the ground truth whose phone and full name nobody else shares.

    Last names alone are shared in the generated population (42 names for 300 people), so
    the name is searched as the raw CRM line holds it ("First,Last"), and the last name on its
    own only when it is unique. Each needle must occur in the raw files only on the person's
    own lines, so any hit after the erasure can only be theirs.
    """
    root = Path(cfg.data_dir)
    catalog = Catalog(cfg)
    pii = {r["customer_key"]: r.asDict() for r in catalog.read(spark, "silver.customer_pii").collect()}
    bronze = catalog.read(spark, "bronze.crm_customers").select(
        F.trim("customer_id").alias("customer_id"), "phone").collect()
    names = [(p["first_name"] or "", p["last_name"] or "") for p in pii.values()]
    last_names = [n[1].lower() for n in names]
    phones = [p["phone"] for p in pii.values() if p["phone"]]
    lines = [line.lower() for line in _raw_lines(root)]
    with open(root / "raw" / "_ground_truth" / "archetypes.csv", newline="") as handle:
        candidates = [row["customer_id"] for row in csv.DictReader(handle)]
    for customer_id in candidates:
        person = pii.get(crm_customer_key(customer_id))
        if not person or not all(person[c] for c in ("email", "phone", "first_name", "last_name",
                                                     "social_handle")):
            continue
        first, last = person["first_name"], person["last_name"]
        if names.count((first, last)) != 1 or phones.count(person["phone"]) != 1:
            continue
        raw_phones = {r["phone"] for r in bronze if r["customer_id"] == customer_id and r["phone"]}
        needles = [person["email"], person["phone"], person["social_handle"], f"{first},{last}",
                   *raw_phones]
        if last_names.count(last.lower()) == 1:
            needles.append(last)
        own = [customer_id.lower(), person["email"].lower(),
               person["social_handle"].lower().lstrip("@")]
        if all(any(t in line for t in own) for n in needles for line in lines if n.lower() in line):
            return {**person, "customer_id": customer_id, "needles": needles}
    pytest.fail("no customer with a unique phone and full name in the xs lake")


@pytest.fixture(scope="module")
def erased(spark, xs_lake, tmp_path_factory):
    cfg = copy_lake(xs_lake, tmp_path_factory.mktemp("erasure") / "lake")
    person = _pick_person(spark, cfg)
    root = Path(cfg.data_dir)
    needles = person["needles"]
    before = {n: _files_containing(root, n) for n in needles}
    # One erasure, interrupted after the raw files (as a crash would) and then re-run: the
    # tests below check the completed result, so they also prove the resume is complete.
    email = person["email"]
    with pytest.raises(_SimulatedCrash):
        erase_subject(spark, cfg, email=email.upper(), stop_after="raw")
    pii = Catalog(cfg).read(spark, "silver.customer_pii")
    person["left_after_crash"] = pii.where(F.col("email") == email).count()
    result = erase_subject(spark, cfg, email=email)
    return cfg, person, needles, before, result


def test_person_was_there_before(erased):
    _, _, needles, before, result = erased
    # The search finds them before erasure (else a clean result after proves nothing).
    assert all(before.values()), before
    assert result.rows_deleted.get("silver.customer_pii") == 1
    assert result.rows_deleted.get("bronze.crm_customers", 0) >= 1


def test_byte_search_of_the_whole_data_root_finds_nothing(erased):
    cfg, person, needles, _, _ = erased
    root = Path(cfg.data_dir)
    # Parquet, _delta_log JSON and checkpoints, _change_data, raw files, stream checkpoints,
    # mlflow: every file under the data root.
    assert {n: _files_containing(root, n) for n in needles} == {n: [] for n in needles}
    logs = [p for p in root.rglob("_delta_log/*") if p.is_file()]
    assert logs, "the search covered the transaction logs"


def test_time_travel_no_longer_returns_the_person(spark, erased):
    cfg, person, _, _, _ = erased
    path = Catalog(cfg).path("silver.customers")
    key = crm_customer_key(person["customer_id"])
    try:
        rows = (spark.read.format("delta").option("versionAsOf", 0).load(path)
                .where(F.col("customer_key") == key).count())
    except Exception as exc:  # noqa: BLE001 - vacuumed files: the old version cannot be read
        assert re.search(r"(?i)not.?found|does not exist|FileNotFound|vacuum", str(exc))
    else:
        assert rows == 0


def test_erasure_log_holds_no_identifier(spark, erased):
    cfg, person, _, _, result = erased
    log = Catalog(cfg).read(spark, ERASURE_LOG).toPandas()
    assert set(log["request_id"]) == {result.request_id}
    assert "complete" in set(log["status"])
    text = log.to_csv().lower()
    for value in (person["customer_id"], person["email"], crm_customer_key(person["customer_id"])):
        assert value.lower() not in text


def test_second_erase_changes_nothing(spark, erased):
    cfg, person, _, _, _ = erased
    catalog = Catalog(cfg)
    names = [f"{layer.name}.{t.name}" for layer in (Path(cfg.data_dir) / "lake").iterdir()
             for t in layer.iterdir() if (t / "_delta_log").is_dir()]
    versions = {n: catalog.current_version(spark, n) for n in names}
    again = erase_subject(spark, cfg, email=person["email"])
    assert again.already_erased and again.total_rows == 0
    assert {n: catalog.current_version(spark, n) for n in names} == versions


def test_unknown_person_is_one_clear_error(spark, erased):
    cfg = erased[0]
    with pytest.raises(SubjectNotFoundError, match="nothing was changed"):
        erase_subject(spark, cfg, email="nobody@example.invalid")


def test_crash_in_the_middle_is_completed_by_a_rerun(spark, erased):
    cfg, person, _, _, result = erased
    # The crash came after the raw files: the CRM tables still held the person then.
    assert person["left_after_crash"] == 1
    log = Catalog(cfg).read(spark, ERASURE_LOG).toPandas()
    # The re-run continued the crashed request (same id) and completed it.
    assert set(log["request_id"]) == {result.request_id}
    assert {"planned", "done", "complete"} <= set(log["status"])
    planned = set(log.loc[log["status"] == "planned", "step"])
    assert {"silver.customer_pii", "bronze.crm_customers", "raw"} <= planned
    # Every planned table, and the KPI aggregates rebuilt without the person.
    assert set(result.vacuumed) == (planned - {"raw"}) | {"gold.kpi_daily",
                                                          "gold.kpi_channel_daily"}


def test_daily_kpis_no_longer_count_the_person(spark, xs_lake, erased):
    """kpi_daily has no key to delete by; erasure rebuilds it. Expected: the untouched lake's
    figures minus the person's own completed orders, day by day."""
    cfg, person, _, _, _ = erased
    key = crm_customer_key(person["customer_id"])
    before = {r["day"]: r for r in Catalog(xs_lake).read(spark, "gold.kpi_daily").collect()}
    after = {r["day"]: r for r in Catalog(cfg).read(spark, "gold.kpi_daily").collect()}
    as_of = max(r["as_of"] for r in before.values())
    own = (
        Catalog(xs_lake).read(spark, "silver.orders")
        .where((F.col("customer_key") == key) & (F.lower(F.trim("status")) == "completed"))
        .where(F.to_date("order_ts") <= F.lit(as_of))
        .groupBy(F.to_date("order_ts").alias("day"))
        .agg(F.count(F.lit(1)).alias("n"), F.sum("amount_eur").alias("eur"))
        .collect()
    )
    own = {r["day"]: r for r in own}
    assert set(after) == set(before)
    for day, row in before.items():
        mine = own.get(day)
        assert after[day]["orders"] == row["orders"] - (mine["n"] if mine else 0), day
        assert after[day]["revenue_eur"] == pytest.approx(
            row["revenue_eur"] - (mine["eur"] if mine else 0.0), abs=1e-6), day
    print(f"the erased person had {sum(r['n'] for r in own.values())} completed order(s)")


def test_bronze_and_silver_rerun_after_erasure_bring_nothing_back(spark, erased):
    """The erasure rewrote the person's raw CRM file: bronze must not take the rewritten file
    for a new delivery and land the other customers again, and silver must bring nothing back.
    (Last in this module: it runs the stages on the erased lake.)"""
    cfg, person, _, _, _ = erased
    catalog = Catalog(cfg)
    tables = ("bronze.crm_customers", "silver.customers", "silver.customer_pii")
    rows_before = {t: catalog.read(spark, t).count() for t in tables}
    lines: list[str] = []
    for stage in ("bronze", "silver"):
        run_stages(spark, cfg, stage, RunContext(run_id=f"after-erasure-{stage}"),
                   echo=lines.append)
    assert any(re.search(r"bronze: 0 rows landed", line) for line in lines), lines
    assert {t: catalog.read(spark, t).count() for t in tables} == rows_before
    assert catalog.read(spark, "bronze.crm_customers").where(
        F.trim("customer_id") == person["customer_id"]).count() == 0
    assert catalog.read(spark, "silver.customers").where(
        F.col("customer_key") == crm_customer_key(person["customer_id"])).count() == 0
