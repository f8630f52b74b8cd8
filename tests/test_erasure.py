"""Erasure: after erase + VACUUM no byte of the person is left anywhere under the data root."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import crm_customer_key, indexed_in_last_commit, lake_tables
from erasurelib import files_containing
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.errors import SubjectNotFoundError
from lakehouse.pipeline import RunContext, run_stages
from lakehouse.privacy.erasure import ERASURE_LOG, erase_subject


@pytest.fixture(scope="module")
def erased(erased_lake):
    """conftest.erased_lake: (config, person, needles, files holding each needle before, result)."""
    return erased_lake


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
    assert {n: files_containing(root, n) for n in needles} == {n: [] for n in needles}
    logs = [p for p in root.rglob("_delta_log/*") if p.is_file()]
    assert logs, "the search covered the transaction logs"


def test_a_table_that_held_the_person_only_in_an_older_version_is_vacuumed(erased):
    cfg, person, _, _, result = erased
    # conftest.erased_lake rewrote gold.customer_360 without the person before the erasure.
    assert person["older_only_rows"] == 1
    assert "gold.customer_360" in result.vacuumed
    key = crm_customer_key(person["customer_id"])
    table = Path(Catalog(cfg).path("gold.customer_360"))
    files = [p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts]
    assert files
    holding = [p.name for p in files
               if key in pq.read_table(p, columns=["customer_key"]).column(0).to_pylist()]
    assert holding == []


def test_runs_rebuilt_by_reproduce_are_removed(erased):
    cfg, person, _, _, _ = erased
    # conftest.erased_lake left a reproduce copy of gold.customer_360 holding the person.
    scratch = Path(cfg.data_dir) / cfg.get("audit.scratch_dir")
    key = crm_customer_key(person["customer_id"])
    holding = [p for p in scratch.rglob("*.parquet") if "_delta_log" not in p.parts
               and key in pq.read_table(p, columns=["customer_key"]).column(0).to_pylist()]
    assert holding == []
    assert not scratch.exists()


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
    names = lake_tables(cfg)
    versions = {n: catalog.current_version(spark, n) for n in names}
    again = erase_subject(spark, cfg, email=person["email"])
    assert again.already_erased and again.total_rows == 0
    assert {n: catalog.current_version(spark, n) for n in names} == versions


def test_subject_report_of_the_erased_person_names_the_erasure(spark, erased):
    from lakehouse.privacy.subject_report import subject_report

    cfg, person, _, _, result = erased
    with pytest.raises(SubjectNotFoundError, match=f"erased by request {result.request_id}"):
        subject_report(spark, cfg, person["customer_id"])


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
    # Every planned table, and the gold tables rebuilt without the person: the KPI aggregates,
    # and, by a re-run of an interrupted request, customer_360 and journeys (what bronze shows
    # of another customer on the person's browser may have gone with the first run).
    assert set(result.vacuumed) == (planned - {"raw"}) | {
        "gold.kpi_daily", "gold.kpi_channel_daily", "gold.customer_360", "gold.journeys"}


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


def test_audit_after_an_erasure_checks_gold_against_the_erased_silver(spark, erased):
    """Gold's lineage names the silver versions it was built from; the erasure deleted the
    person from silver and gold and vacuumed those versions' files. The gold checks compare
    gold with silver as the erasure left it, and balance (a failed read inside Spark before)."""
    from lakehouse.audit.reconcile import gold_checks, gold_input_versions

    cfg, *_ = erased
    catalog = Catalog(cfg)
    built_from = gold_input_versions(spark, catalog)["silver.customers"]
    assert built_from < catalog.current_version(spark, "silver.customers")
    checks = gold_checks(spark, catalog)
    assert checks and all(c["passed"] for c in checks), checks


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


def test_silver_and_reconciliation_run_after_a_second_erasure(spark, erased):
    """Erasures rewrite bronze files and VACUUM removes what they replaced, so the change feed
    of bronze's early versions, and of an erasure's own version, can no longer be read. Silver
    after a second erasure (whose versions silver has not read yet) and the count
    reconciliation over every processed version must still run, and balance.
    (After the re-run test above: it runs silver on the erased lake.)"""
    from erasurelib import pick_person

    from lakehouse.silver.reconcile import reconcile

    cfg, first, _, _, _ = erased
    second = pick_person(spark, cfg)
    assert second["customer_id"] != first["customer_id"]
    erase_subject(spark, cfg, customer_id=second["customer_id"])
    lines: list[str] = []
    run_stages(spark, cfg, "silver", RunContext(run_id="after-second-erasure"),
               echo=lines.append)
    catalog = Catalog(cfg)
    keys = [crm_customer_key(p["customer_id"]) for p in (first, second)]
    for table in ("silver.customers", "silver.events", "silver.orders"):
        assert catalog.read(spark, table).where(F.col("customer_key").isin(keys)).count() == 0
    results = reconcile(spark, cfg)
    assert {r["source"] for r in results} == {
        "crm_customers", "clickstream", "orders", "payments", "social_posts", "iot_readings"}
    assert all(r["balanced"] for r in results), results


def _header(folder: Path) -> str:
    first = sorted(p for p in folder.iterdir() if p.name.endswith(".csv"))[0]
    return first.read_text(encoding="utf-8").splitlines()[0]


def _csv_line(header: str, values: dict[str, str]) -> str:
    return ",".join(values.get(name, "") for name in header.split(","))


def test_a_source_that_delivers_an_erased_person_again_does_not_land_them(spark, erased):
    """The CRM re-sends the erased person (other spacing and case) and an order file still
    holds one of their orders: bronze lands the other rows of those files, not theirs, and
    their lines leave the raw files, so no byte of them is back under the data root.
    (After the tests above: it runs bronze on the erased lake.)"""
    from lakehouse.privacy.suppression import SUPPRESSION_TABLE

    cfg, person, needles, _, _ = erased
    root = Path(cfg.data_dir)
    catalog = Catalog(cfg)
    crm_dir, orders_dir = root / "raw" / "crm_customers", root / "raw" / "orders"
    crm_header, orders_header = _header(crm_dir), _header(orders_dir)
    first, last = needles[3].split(",")
    theirs = _csv_line(crm_header, {
        "customer_id": f" {person['customer_id']} ", "first_name": first, "last_name": last,
        "email": person["email"].upper(), "phone": person["phone"], "country": "DE",
        "signup_date": "2025-05-01", "marketing_consent": "true",
        "social_handle": person["social_handle"], "updated_at": "2026-01-04T09:00:00Z",
    })
    newcomer = _csv_line(crm_header, {
        "customer_id": "C-REDELIVERY-1", "first_name": "Ada", "last_name": "Newcomer",
        "email": "ada.newcomer@example.org", "country": "FR", "signup_date": "2026-01-04",
        "marketing_consent": "false", "updated_at": "2026-01-04T09:00:00Z",
    })
    order_line = _csv_line(orders_header, {
        "order_id": "O-REDELIVERY-THEIRS", "customer_id": person["customer_id"],
        "order_ts": "2026-01-04T10:00:00Z", "amount": "12.50", "currency": "EUR",
        "status": "completed", "n_items": "1",
    })
    other_order = _csv_line(orders_header, {
        "order_id": "O-REDELIVERY-OTHER", "customer_id": "C-REDELIVERY-1",
        "order_ts": "2026-01-04T10:00:00Z", "amount": "7.00", "currency": "EUR",
        "status": "completed", "n_items": "1",
    })
    crm_file = crm_dir / "crm_customers_2026-01-04_redelivery.csv"
    orders_file = orders_dir / "orders_2026-01-04_redelivery.csv"
    crm_file.write_text("\r\n".join([crm_header, theirs, newcomer]) + "\r\n", encoding="utf-8")
    orders_file.write_text("\n".join([orders_header, other_order, order_line]) + "\n",
                           encoding="utf-8")

    lines: list[str] = []
    run_stages(spark, cfg, "bronze", RunContext(run_id="redelivery"), echo=lines.append)

    assert any("bronze.crm_customers" in x and "1 row(s) of erased people not landed" in x
               for x in lines), lines
    assert any("bronze.orders" in x and "1 row(s) of erased people not landed" in x
               for x in lines), lines
    assert any("bronze: 2 rows landed" in x for x in lines), lines
    crm = catalog.read(spark, "bronze.crm_customers")
    assert crm.where(F.trim("customer_id") == person["customer_id"]).count() == 0
    assert crm.where(F.col("customer_id") == "C-REDELIVERY-1").count() == 1
    orders = catalog.read(spark, "bronze.orders")
    assert orders.where(F.col("order_id") == "O-REDELIVERY-THEIRS").count() == 0
    assert orders.where(F.col("order_id") == "O-REDELIVERY-OTHER").count() == 1
    # Only their lines left the files; the rest is byte for byte as delivered (CRLF kept).
    assert crm_file.read_bytes() == ("\r\n".join([crm_header, newcomer]) + "\r\n").encode()
    assert orders_file.read_text(encoding="utf-8") == "\n".join([orders_header, other_order]) + "\n"
    assert {n: files_containing(root, n) for n in needles} == {n: [] for n in needles}
    # The list holds keyed hashes only.
    listed = catalog.read(spark, SUPPRESSION_TABLE).toPandas().to_csv().lower()
    for value in (person["customer_id"], person["email"], person["social_handle"]):
        assert value.lower().strip("@") not in listed


def test_vacuum_after_an_erasure_purges_rows_that_deletion_vectors_only_masked(spark, config):
    """A table with deletion vectors (created by a session with Databricks' defaults, or
    switched on later): the erasure's MERGE only marks the row deleted in a file that keeps
    it, and VACUUM keeps the file while the table uses it. vacuum_tables_now rewrites such
    files first, so that no file of the table holds the person any more."""
    from delta.tables import DeltaTable

    from lakehouse.privacy.erasure import vacuum_tables_now
    from lakehouse.privacy.stats import table_creation_options

    catalog = Catalog(config)
    path = catalog.path("silver.masked")
    email = "erase.me.0042@example.org"
    rows = spark.createDataFrame([(email,), ("keep.me@example.org",)], "email string")
    # No min/max of the email in the log (as every table of the lake), deletion vectors on.
    (rows.coalesce(1).write.format("delta").options(**table_creation_options(rows.schema))
     .option("delta.enableDeletionVectors", "true").save(path))
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(spark.createDataFrame([(email,)], "email string").alias("s"), "t.email = s.email")
     .whenMatchedDelete().execute())
    root = Path(path)
    assert list(root.glob("deletion_vector_*.bin")), "the delete wrote a deletion vector"
    assert any(p.endswith(".parquet") for p in files_containing(root, email)), \
        "the row is masked, its data file still holds it"
    vacuum_tables_now(spark, catalog, ["silver.masked"], 0)
    assert files_containing(root, email) == []
    assert [r["email"] for r in catalog.read(spark, "silver.masked").collect()] == [
        "keep.me@example.org"]


def test_no_identifier_the_erasure_deletes_by_has_file_statistics(spark, xs_lake):
    """Delta keeps the min/max of indexed columns in the _delta_log, which outlives the
    erasure's DELETE and VACUUM: no table may index a column the erasure matches a person by
    (an order id once was, in the orders and payments tables and gold.journeys)."""
    from lakehouse.privacy.erasure import VALUE_COLUMNS

    identifiers = set(VALUE_COLUMNS) | {"journey_id"}
    catalog = Catalog(xs_lake)
    names = lake_tables(xs_lake)
    assert {"silver.orders", "silver.payments", "gold.journeys"} <= set(names)
    indexed = {}
    for name in names:
        properties = catalog.delta_table(spark, name).detail().first()["properties"]
        columns = properties.get("delta.dataSkippingStatsColumns")
        assert columns is not None or properties.get("delta.dataSkippingNumIndexedCols") == "0", \
            f"{name} indexes Delta's default first 32 columns"
        held = identifiers & set((columns or "").split(","))
        if held:
            indexed[name] = sorted(held)
    assert indexed == {}


def test_the_delta_logs_keep_no_string_statistics_but_run_and_record_ids(xs_lake):
    """Any string a source delivered, or derived from one, may hold a person: a page URL with
    an email in its query, a bronze field that a line with a field too many filled with a
    phone number. Its min/max in a commit's ``add`` action outlives the erasure's DELETE and
    VACUUM. Read from the logs Delta wrote (not from the table properties): the only strings
    with statistics are the run ids the lake writes itself and, in silver, a source's record id
    (its MERGE skips earlier days' files by it), which names a record, not a person."""
    import json

    from lakehouse.sources import load_sources

    lake_written = {"_ingest_run_id", "_run_id", "run_id", "stage_run_uuid"}
    record_ids = {s.natural_key[0] for s in load_sources(xs_lake).values()}
    root = Path(xs_lake.data_dir) / "lake"
    kept: dict[str, set[str]] = {}
    commits = 0
    for name in lake_tables(xs_lake):
        allowed = lake_written | (record_ids if name.startswith("silver.") else set())
        strings: set[str] = set()
        for commit in sorted((root.joinpath(*name.split(".")) / "_delta_log").glob("*.json")):
            commits += 1
            for action in map(json.loads, commit.read_text().splitlines()):
                if "metaData" in action:
                    fields = json.loads(action["metaData"]["schemaString"])["fields"]
                    strings |= {f["name"] for f in fields if f["type"] == "string"}
                stats = json.loads((action.get("add") or {}).get("stats") or "{}")
                held = (set(stats.get("minValues", {})) | set(stats.get("maxValues", {})))
                if held & strings - allowed:
                    kept.setdefault(name, set()).update(held & strings - allowed)
    assert commits > len(lake_tables(xs_lake)), "the logs were read"
    assert kept == {}


def test_a_table_created_before_the_statistics_policy_is_narrowed_by_the_next_write(
    spark, config
):
    """Delta reads the stats columns only when a write creates the table: a lake built
    before keeps indexing its free text. silver's ensure_table narrows it to what the policy
    allows (keeping the record id its MERGE is scoped by), and later commits no longer hold
    the min/max of the text; a table created with Delta's defaults (first 32 columns) too."""
    from lakehouse.silver.io import ensure_table

    catalog = Catalog(config)
    schema = "event_id string, page string, n int"
    old = spark.createDataFrame([("E1", "/p?email=old.one@example.org", 1)], schema)
    old.write.format("delta").option("delta.dataSkippingStatsColumns", "event_id,page,n").save(
        catalog.path("silver.old_events"))
    old.write.format("delta").save(catalog.path("silver.defaults"))
    assert "page" in indexed_in_last_commit(catalog.path("silver.old_events"))

    ensure_table(spark, catalog, "silver.old_events", old.schema,
                 indexed_strings=frozenset({"event_id"}))
    ensure_table(spark, catalog, "silver.defaults", old.schema)
    versions = [catalog.current_version(spark, n) for n in ("silver.old_events", "silver.defaults")]
    # Narrowed once: nothing is left to drop, and no further commit.
    assert catalog.narrow_statistics(spark, "silver.old_events",
                                     indexed_strings=frozenset({"event_id"})) == []
    assert catalog.narrow_statistics(spark, "silver.defaults") == []
    assert versions == [catalog.current_version(spark, n)
                        for n in ("silver.old_events", "silver.defaults")]

    later = spark.createDataFrame([("E2", "/p?email=new.one@example.org", 2)], schema)
    for name, indexed in (("silver.old_events", {"event_id", "n"}), ("silver.defaults", {"n"})):
        later.write.format("delta").mode("append").save(catalog.path(name))
        assert set(indexed_in_last_commit(catalog.path(name))) == indexed, name
    assert all(files_containing(Path(catalog.path(n)) / "_delta_log", "new.one") == []
               for n in ("silver.old_events", "silver.defaults"))


def test_a_quarantined_crm_record_without_customer_id_is_found_by_its_line(spark, config):
    """A CRM line without its customer id is quarantined with the personal fields withheld and
    a keyed hash of the line (silver's with_quarantine_raw): an erasure by the email on that
    line must still match the quarantine row (it matched nothing of it before)."""
    from lakehouse.privacy.erasure import erasure_condition, resolve_subject, subject_frame
    from lakehouse.privacy.pseudonym import DEV_KEY
    from lakehouse.silver.cleanse import with_quarantine_raw
    from lakehouse.sources import load_sources

    source = load_sources(config)["crm_customers"]
    line = ",Ann,Vale,Ann.Vale77@Example.com,0170 1234567,DE,2025-11-15,false,,@annvale,2025-11-19T17:42:29Z"
    values = dict(zip(source.columns, line.split(","), strict=True))
    values["customer_id"] = None
    other = {**values, "email": "bo@example.com", "first_name": "Bo", "country": "FR"}
    bronze = spark.createDataFrame(
        [{**values, "_raw": line, "_is_malformed": False},
         {**other, "_raw": line.replace("Ann", "Bo"), "_is_malformed": False}],
        ", ".join(f"{c} string" for c in source.columns) + ", _raw string, _is_malformed boolean",
    )
    catalog = Catalog(config)
    bronze.write.format("delta").save(catalog.path("bronze.crm_customers"))
    quarantine = with_quarantine_raw(bronze, source, DEV_KEY).select(
        F.lit(None).cast("string").alias("natural_key"), F.col("_quarantine_raw").alias("raw"))
    assert quarantine.where(F.col("raw").contains("ann.vale77")).count() == 0

    subject = resolve_subject(spark, catalog, DEV_KEY, emails_asked=["ann.vale77@example.com"])
    matched = (quarantine.alias("t").crossJoin(subject_frame(spark, subject).alias("s"))
               .where(erasure_condition(quarantine.schema)).select("t.raw").collect())
    assert len(matched) == 1 and '"country":"DE"' in matched[0][0]
    assert '"first_name":"<withheld>"' in matched[0][0]


@pytest.mark.parametrize("asked", [
    {"customer_id": "true"},        # a word on every consenting customer's CRM line
    {"email": "gmail.com"},         # a domain: a token of every Gmail address
    {"customer_id": "c0000001"},    # C0000001 in the wrong case (ids are exact)
])
def test_an_identifier_the_lake_does_not_hold_erases_nothing(spark, xs_lake, tmp_path, asked):
    """Only identifiers the lake holds are matched: raw lines are matched by whole token
    without case, and such a word once removed other people's CRM lines and bronze rows."""
    from conftest import copy_lake

    from lakehouse.privacy.subject_report import subject_report

    cfg = copy_lake(xs_lake, tmp_path / "lake")
    root = Path(cfg.data_dir)
    raw_before = {p: p.read_bytes() for p in (root / "raw").rglob("*") if p.is_file()}
    token = next(iter(asked.values())).lower()
    assert any(token in b.lower().decode("utf-8", "replace") for b in raw_before.values()), \
        "the token is on some delivered line (else nothing could go wrong)"
    catalog = Catalog(cfg)
    names = lake_tables(cfg)
    versions = {n: catalog.current_version(spark, n) for n in names}
    with pytest.raises(SubjectNotFoundError, match="no data held"):
        erase_subject(spark, cfg, **asked)
    assert {n: catalog.current_version(spark, n) for n in names} == versions
    assert {p: p.read_bytes() for p in (root / "raw").rglob("*") if p.is_file()} == raw_before
    if "customer_id" in asked:
        with pytest.raises(SubjectNotFoundError):
            subject_report(spark, cfg, asked["customer_id"])
