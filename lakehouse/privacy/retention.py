"""`lakehouse run retention`: expire data past its date, keep marketing outputs to consent.

1. Customers whose ``data_expiry_date`` (set by the customer in the CRM) lies before the run
   date are erased exactly like ``lakehouse erase`` (every layer, raw files, VACUUM), as one
   request in audit.erasure_log whose subject hash says "retention", not who. Only those
   customers: another customer sharing an email with one of them keeps their data (an
   erasure request by a person takes every account of theirs; an expiry date is one
   customer's). A run that crashed part-way is completed by the next one, whatever its date:
   the expired customers it erased are gone from silver, but its request is still open.
2. Customers without marketing consent (``marketing_consent`` false or unknown) are removed from
   the marketing outputs: gold.journeys and gold.customer_segments (attribution is computed
   from journeys, so it follows on its next run). The rest of their data stays: service and
   bookkeeping do not need consent. Gold and segment runs leave them out of those outputs
   too, so this step only catches consent withdrawn since the last of those runs.

Expiry dates are read from silver, so retention is refused while bronze holds CRM records
silver has not read yet (one may move a customer's expiry later): run silver first.

The run date is ``ctx.as_of`` when given, else today's UTC date: expiry is about the real
calendar, unlike the gold figures. A run date after today is refused before anything is read
(a mistyped year would erase people whose expiry date has not come).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.asof import future_date_problem
from lakehouse.catalog import Catalog
from lakehouse.config import Config
from lakehouse.errors import InputDataError
from lakehouse.gold import has_marketing_consent
from lakehouse.privacy.erasure import erase_people, has_open_request, keyed_hash
from lakehouse.privacy.keycheck import lake_pseudonym_key
from lakehouse.privacy.pseudonym import pseudonym, trim_whitespace

MARKETING_OUTPUTS = ("gold.journeys", "gold.customer_segments")
CRM_BRONZE = "bronze.crm_customers"


def filter_expired(customers_df: DataFrame, run_date) -> DataFrame:
    """Customers whose data-expiry date has passed (strictly before the run date)."""
    return customers_df.where(
        F.col("data_expiry_date").isNotNull() & (F.col("data_expiry_date") < F.lit(run_date))
    ).select("customer_key")


def filter_without_consent(customers_df: DataFrame) -> DataFrame:
    """Customers who did not agree to marketing (false, or never asked: null)."""
    return customers_df.where(~has_marketing_consent(F.col("marketing_consent"))).select(
        "customer_key"
    )


def check_crm_read_by_silver(spark: SparkSession, config: Config) -> None:
    """Raise InputDataError when bronze holds CRM records silver has not read yet.

    Expiry dates are read from silver: a record that bronze landed and silver has not read may
    move a customer's data-expiry date later (a renewed contract, a new consent), and an
    erasure cannot be undone. Commits that add no row (an erasure's VACUUM) do not count.
    """
    from lakehouse.silver.job import sources_with_unread_bronze
    from lakehouse.sources import load_sources

    crm = {n: s for n, s in load_sources(config).items() if s.bronze_table == CRM_BRONZE}
    if sources_with_unread_bronze(spark, config, crm):
        raise InputDataError(
            f"retention: {CRM_BRONZE} holds CRM records that silver has not read yet, and one "
            "may move a customer's data-expiry date; run `lakehouse run silver` first; "
            "nobody was erased"
        )


def run_retention(
    spark: SparkSession, config: Config, ctx, *, stop_after: str | None = None
) -> list[str]:
    """``stop_after`` (tests only): the erasure stops right after that step, as a crash would."""
    catalog = Catalog(config)
    run_date = ctx.as_of or datetime.now(UTC).date()
    problem = future_date_problem(run_date)
    if problem:
        # Checked before anything is read: erasing someone whose expiry date has not come
        # yet cannot be undone.
        raise InputDataError(f"retention: {problem}; nobody was erased")
    if not catalog.exists(spark, "silver.customers"):
        return ["retention: silver.customers does not exist yet; nothing to do"]
    check_crm_read_by_silver(spark, config)
    customers = catalog.read(spark, "silver.customers")
    key = lake_pseudonym_key(spark, config, catalog)
    lines: list[str] = []

    expired_keys = filter_expired(customers, run_date)
    customer_ids: list[str] = []
    if catalog.exists(spark, CRM_BRONZE):
        # customer_id is only in bronze: match the expired keys to it by recomputing the key.
        crm = catalog.read(spark, CRM_BRONZE).select(
            trim_whitespace("customer_id").alias("customer_id")
        ).distinct().withColumn("customer_key", pseudonym("crm", F.col("customer_id"), key))
        customer_ids = sorted(
            r["customer_id"] for r in crm.join(expired_keys, "customer_key", how="left_semi")
            .collect()
        )
    # One subject for every retention run: a run that crashed after deleting the rows (they
    # are no longer found as expired) is completed by the next, whatever date it is run for.
    request = keyed_hash(key, "erasure", "retention")
    unfinished = has_open_request(spark, catalog, request)
    if customer_ids or unfinished:
        result = erase_people(spark, config, request, customer_ids=customer_ids,
                              echo=lines.append, key=key, exact=True, stop_after=stop_after)
        if unfinished:
            lines.append(f"retention: an interrupted run's request {result.request_id} completed")
        lines.append(f"retention: {len(customer_ids)} customer(s) past their data-expiry date "
                     f"erased ({result.total_rows} rows, request {result.request_id})")
    else:
        lines.append(f"retention: no customer past their data-expiry date on {run_date}")

    # Read again: the erasure above may have removed customers.
    without_consent = filter_without_consent(catalog.read(spark, "silver.customers"))
    for name in MARKETING_OUTPUTS:
        if not catalog.exists(spark, name):
            continue
        doomed = catalog.read(spark, name).join(without_consent, "customer_key", how="left_semi")
        rows = doomed.count()
        if rows:
            (
                catalog.delta_table(spark, name).alias("t")
                .merge(F.broadcast(without_consent.alias("s")), "t.customer_key = s.customer_key")
                .whenMatchedDelete()
                .execute()
            )
        lines.append(f"  {name:<32} -{rows:>6} rows of customers without marketing consent")
    return lines
