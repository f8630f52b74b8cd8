"""`lakehouse subject-report`: everything the lakehouse holds about one person.

Which tables hold rows of theirs and which columns of those rows have a value, what each table
is used for (conf/data_usage.yaml), their consent and data-expiry state, and where the data
came from (bronze ``_source_file`` of their rows, and raw files holding their lines). Values
are not printed: the report is what a customer-facing data dashboard would list, and it may be
written where the person's own data should not be copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.config import Config, load_yaml_file, local_path, shown, string_list, string_value
from lakehouse.errors import ConfigError, SubjectNotFoundError
from lakehouse.privacy.erasure import (
    SharedDeviceRows,
    Subject,
    erasable_tables,
    keyed_hash,
    raw_files_holding,
    resolve_subject,
    shared_device_rows,
    subject_frame,
    subject_rows,
)
from lakehouse.privacy.keycheck import lake_pseudonym_key
from lakehouse.privacy.suppression import listing_of

UNREGISTERED = "purpose not registered"


def load_usage(config: Config) -> dict[str, Any]:
    """The data-usage register by table; a mistake is one line naming the file and entry."""
    path = config.conf_dir / config.get("privacy.data_usage_file")
    tables = load_yaml_file(path, "the data-usage register").get("tables") or {}
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: tables must be a mapping of table: usage, got {shown(tables)}")
    for table, entry in tables.items():
        place = f"{path}: tables.{table}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{place} must be a mapping (purposes, basis, retention), "
                              f"got {shown(entry)}")
        if "purposes" in entry:
            entry["purposes"] = list(string_list(entry["purposes"], f"{place}.purposes", "purpose"))
        for key in ("basis", "retention"):
            if entry.get(key) is not None:
                string_value(entry[key], f"{place}.{key}")
    return tables


def subject_report(spark: SparkSession, config: Config, customer_id: str) -> dict[str, Any]:
    """The report as a JSON-ready dict; SubjectNotFoundError when nothing is held."""
    usage = load_usage(config)
    catalog = Catalog(config)
    key = lake_pseudonym_key(spark, config, catalog)
    subject = resolve_subject(spark, catalog, key, customer_ids=[customer_id])
    # Another customer's rows on a shared browser or device are theirs, not this person's.
    kept = shared_device_rows(spark, config, catalog, subject, key)
    source_df = subject_frame(spark, subject, kept).cache()
    tables: list[dict[str, Any]] = []
    lineage: set[str] = set()
    try:
        for name in erasable_tables(catalog):
            df = catalog.read(spark, name)
            matches = subject_rows(df, source_df)
            if matches is None:
                continue
            mine = matches.select("t.*")
            figures = mine.agg(
                F.count(F.lit(1)).alias("__rows"),
                *[F.count(F.col(f"`{c}`")).alias(c) for c in df.columns],
            ).first()
            if not figures["__rows"]:
                continue
            entry = usage.get(name, {})
            tables.append({
                "table": name,
                "rows": int(figures["__rows"]),
                "columns": [c for c in df.columns if figures[c]],
                "purposes": entry.get("purposes", [UNREGISTERED]),
                "basis": entry.get("basis"),
                "retention": entry.get("retention"),
            })
            if "_source_file" in df.columns:
                lineage |= {r[0] for r in mine.select("_source_file").distinct().collect() if r[0]}
    finally:
        source_df.unpersist()
    raw_files = _raw_files_holding(catalog, subject, kept)
    if not tables and not raw_files:
        listed = listing_of(spark, catalog, "crm", keyed_hash(key, "crm", customer_id.strip()))
        if listed is not None:
            raise SubjectNotFoundError(
                f"no data held for customer id {customer_id!r}: erased by request "
                f"{listed['request_id']} ({listed['recorded_at']:%Y-%m-%d %H:%M} UTC); bronze "
                f"does not land new deliveries of them"
            )
        raise SubjectNotFoundError(
            f"no data held for customer id {customer_id!r}: check the id (the person may also "
            f"have been erased)"
        )
    consent: dict[str, Any] = {"marketing_consent": None, "data_expiry_date": None}
    if catalog.exists(spark, "silver.customers"):
        row = (
            catalog.read(spark, "silver.customers")
            .where(F.col("customer_key").isin(sorted(subject.customer_keys)))
            .orderBy(F.col("updated_at").desc_nulls_last())
            .select("marketing_consent", "data_expiry_date").first()
        )
        if row is not None:
            expiry = row["data_expiry_date"]
            consent = {"marketing_consent": row["marketing_consent"],
                       "data_expiry_date": expiry.isoformat() if expiry else None}
    return {
        "customer_id": customer_id,
        "customer_key": sorted(subject.customer_keys),
        "consent": consent,
        "tables": tables,
        "lineage": {"bronze_source_files": sorted(lineage), "raw_files": raw_files},
    }


def _raw_files_holding(
    catalog: Catalog, subject: Subject, kept: SharedDeviceRows | None = None
) -> list[str]:
    root = local_path(catalog.raw_root)
    return [p.relative_to(root).as_posix() for p in raw_files_holding(catalog, subject, kept)]


def format_report(report: dict[str, Any]) -> list[str]:
    consent = report["consent"]
    lines = [
        f"subject report for customer {report['customer_id']}",
        f"  marketing consent: {consent['marketing_consent']}; data expiry date: "
        f"{consent['data_expiry_date'] or 'none set'}",
        "  data held:",
    ]
    for t in report["tables"]:
        lines.append(f"    {t['table']:<30} {t['rows']:>5} rows  columns: {', '.join(t['columns'])}")
        lines.append(f"      used for: {'; '.join(t['purposes'])}"
                     + (f" (basis: {t['basis']})" if t.get("basis") else ""))
    lines.append("  came from (raw files):")
    lines += [f"    {f}" for f in report["lineage"]["raw_files"]]
    return lines


def write_report_json(report: dict[str, Any], path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
