"""Per-source extras and the projections onto the silver table contracts (docs/tables.md).

Only what is truly specific to a source lives here: currency conversion (orders, payments),
keywords (social posts), the customer / restricted customer_pii split of the CRM. A source
without an entry in TABLES gets the generic projection: its declared columns, typed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakehouse.config import Config, load_yaml_file
from lakehouse.errors import ConfigError
from lakehouse.privacy.pseudonym import normalise, pseudonym
from lakehouse.privacy.redact import redact_contact_data
from lakehouse.silver.cleanse import with_cast_error, with_mapped_code
from lakehouse.sources import SourceSpec

REFERENCE_FILE = "reference.yaml"


@dataclass(frozen=True)
class Reference:
    country_codes: tuple[str, ...]
    country_names: Mapping[str, str]
    calling_codes: Mapping[str, str]
    eur_rates: Mapping[str, float]
    keywords: tuple[str, ...]


def load_reference(config: Config) -> Reference:
    path = Path(config.conf_dir) / REFERENCE_FILE
    doc = load_yaml_file(path, "silver reference data")
    try:
        countries = doc["countries"]
        rates = {str(k).upper(): float(v) for k, v in doc["eur_rates"].items()}
        reference = Reference(
            country_codes=tuple(str(c).upper() for c in countries["codes"]),
            country_names={str(k).strip().lower(): str(v).upper()
                           for k, v in countries["names"].items()},
            calling_codes={str(k).upper(): str(v) for k, v in doc["calling_codes"].items()},
            eur_rates=rates,
            keywords=tuple(str(k).lower() for k in doc.get("keywords") or ()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: missing or invalid entry ({exc})") from None
    check_codes_are_text(doc, path)
    if any(r <= 0 for r in rates.values()):
        raise ConfigError(f"{path}: eur_rates must be positive")
    return reference


def check_codes_are_text(doc: Mapping[str, Any], path: Path) -> None:
    """ConfigError naming the entry when a code of reference.yaml is not text: YAML 1.1 reads
    a bare NO (Norway), YES, ON or OFF as a boolean, which str() made the country 'FALSE',
    and then quarantined every Norwegian customer as an unknown country."""
    countries = doc["countries"]
    places = [("countries.codes", c) for c in countries["codes"]]
    places += [(f"countries.names.{name}", code) for name, code in countries["names"].items()]
    places += [("calling_codes", k) for k in doc["calling_codes"]]
    places += [("eur_rates", k) for k in doc["eur_rates"]]
    for place, code in places:
        if isinstance(code, bool):
            raise ConfigError(
                f"{path}: {place} holds {str(code).lower()} where a code belongs: YAML reads a "
                f"bare NO, YES, ON or OFF as true or false; quote the code (\"NO\")"
            )


def _literal_map(mapping: Mapping[str, Any]) -> Column:
    return F.create_map(*[x for k, v in sorted(mapping.items()) for x in (F.lit(k), F.lit(v))])


# -- per-source extras (DataFrame -> DataFrame) ---------------------------------------------


def with_customer_identity(df: DataFrame, key: bytes, ref: Reference) -> DataFrame:
    """CRM rows: ISO country, normalised contact data, pseudonyms and customer_key."""
    mapped = with_mapped_code(df, "country", ref.country_codes, ref.country_names, "country")
    phone = F.col("_phone")
    calling = _literal_map(ref.calling_codes)[F.col("country")]
    # A national number ('0301 1234567') is written internationally using the country's code,
    # so the same phone in two formats gets one pseudonym.
    international = (
        F.when(phone.startswith("+"), phone)
        .when(phone.startswith("0") & calling.isNotNull(),
              F.concat(F.lit("+"), calling, phone.substr(F.lit(2), F.length(phone))))
        .otherwise(phone)
    )
    return (
        mapped.withColumn("_phone", normalise("phone", F.col("phone")))
        .withColumns(
            {
                "customer_key": crm_pseudonym(F.col("customer_id"), key),
                "email_norm": normalise("email", F.col("email")),
                "phone_norm": international,
                "handle_norm": normalise("handle", F.col("social_handle")),
            }
        )
        .drop("_phone")
        .withColumns(
            {
                "email_pseudonym": pseudonym("email", F.col("email_norm"), key, normalised=True),
                "phone_pseudonym": pseudonym("phone", F.col("phone_norm"), key, normalised=True),
                "handle_pseudonym": pseudonym(
                    "handle", F.col("handle_norm"), key, normalised=True
                ),
            }
        )
    )


def with_amount_eur(df: DataFrame, ref: Reference) -> DataFrame:
    """Currency as an upper-case code and the amount in EUR at the fixed reference rate."""
    currency = F.upper(F.col("currency"))
    rate = _literal_map(ref.eur_rates)[currency]
    out = df.withColumns({"currency": currency, "amount_eur": F.round(F.col("amount") / rate, 2)})
    # An amount without a currency has no EUR value either: left in, a completed order became
    # a conversion worth null and revenue silently left it out.
    return with_cast_error(
        out,
        (F.col("currency").isNotNull() & rate.isNull())
        | (F.col("currency").isNull() & F.col("amount").isNotNull()),
        F.when(F.col("currency").isNull(),
               F.lit("currency is missing, so the amount has no EUR value"))
        .otherwise(F.concat(F.lit("currency '"), F.col("currency"),
                            F.lit("' has no reference rate"))),
    )


def crm_pseudonym(customer_id: Column, key: bytes) -> Column:
    """customer_key of a typed customer_id: with_typed_columns has already trimmed it and made
    an empty one null, which is all that normalising a CRM id does (not done twice per row)."""
    return pseudonym("crm", customer_id, key, normalised=True)


def with_customer_key(df: DataFrame, key: bytes) -> DataFrame:
    """customer_key of a typed record that names its CRM customer_id."""
    return df.withColumn("customer_key", crm_pseudonym(F.col("customer_id"), key))


def with_handle_pseudonym(df: DataFrame, key: bytes) -> DataFrame:
    return df.withColumn("handle_pseudonym", pseudonym("handle", F.col("handle"), key))


def keywords(text: Column, vocabulary: tuple[str, ...]) -> Column:
    """Hashtags (without '#') and vocabulary words of a text, lower-case, first-seen order."""
    words = F.split(F.lower(F.coalesce(text, F.lit(""))), r"[^\p{L}\p{N}_#]+")
    vocab = F.array(*[F.lit(w) for w in vocabulary]) if vocabulary else F.array().cast(
        "array<string>"
    )
    picked = F.filter(
        words,
        lambda w: (w.startswith("#") & (F.length(w) > 1)) | F.array_contains(vocab, w),
    )
    return F.array_distinct(F.transform(picked, lambda w: F.regexp_replace(w, "^#+", "")))


def with_keywords(df: DataFrame, ref: Reference) -> DataFrame:
    return df.withColumn("keywords", keywords(F.col("text"), ref.keywords))


# -- projections onto the contracts ---------------------------------------------------------


def _meta(run_id: str) -> list[Column]:
    return [
        F.col("_commit_version").cast("long").alias("_bronze_version"),
        F.lit(run_id).alias("_run_id"),
    ]


# Tables whose customer_key may be filled in later (lookup tables) are partitioned by whether it is
# still unknown. Filling in the key of earlier anonymous rows (a cookie that logs in) then
# rewrites only the files of the anonymous partition: unpartitioned, the few thousand rows filled
# in each day were spread over every file, and Delta copied the whole table to update them
# (scale m, silver.events: 2.04M rows copied for 3,647 updates, 11.8 s of a 25 s MERGE).
ANONYMITY_PARTITION = "_anonymous"


def _anonymity() -> Column:
    return F.col("customer_key").isNull().alias(ANONYMITY_PARTITION)


# Whether a lookup table's customer_key came from silver.identity_map (the record did not name
# its customer) rather than from the record. Only such a key follows the map: when a late,
# earlier sighting gives a cookie another first owner, its looked-up rows move to that owner,
# while a logged-in event keeps the customer it names. Null: not known (a row written before
# this column existed, outside the anonymous partition), never moved.
KEY_LOOKED_UP = "_key_looked_up"


def _key_looked_up(df: DataFrame) -> Column:
    # Set by the lookup (with_resolved_customer); before any lookup, a record that does not
    # name its customer is one whose customer_key is still null.
    if KEY_LOOKED_UP in df.columns:
        return F.col(KEY_LOOKED_UP)
    return F.col("customer_key").isNull().alias(KEY_LOOKED_UP)


def to_customers(df: DataFrame, run_id: str) -> DataFrame:
    return df.select(
        "customer_key", "email_pseudonym", "phone_pseudonym", "handle_pseudonym", "country",
        "signup_date", "marketing_consent", "data_expiry_date", "updated_at", *_meta(run_id),
    )


def to_customer_pii(df: DataFrame, run_id: str) -> DataFrame:
    return df.select(
        "customer_key", "first_name", "last_name", F.col("email_norm").alias("email"),
        F.col("phone_norm").alias("phone"), F.col("handle_norm").alias("social_handle"),
        "updated_at",
    )


def to_events(df: DataFrame, run_id: str) -> DataFrame:
    return df.select(
        "event_id", "event_ts", "cookie_id", "customer_key", "session_id", "page", "event_type",
        "channel", "campaign", *_meta(run_id), _anonymity(), _key_looked_up(df),
    )


def to_orders(df: DataFrame, run_id: str) -> DataFrame:
    return df.select(
        "order_id", "customer_key", "order_ts", "amount", "currency", "amount_eur", "status",
        "n_items", *_meta(run_id),
    )


def to_payments(df: DataFrame, run_id: str) -> DataFrame:
    return df.select(
        "payment_id", "order_id", "payment_ts", "amount", "currency", "amount_eur", "method",
        "status", *_meta(run_id),
    )


def to_social_posts(df: DataFrame, run_id: str) -> DataFrame:
    # Keywords come from the text as posted; the text kept has its contact data redacted.
    return df.select(
        "post_id", "handle_pseudonym", "customer_key", "post_ts",
        redact_contact_data(F.col("text")).alias("text"), "keywords", "likes",
        "shares", *_meta(run_id), _anonymity(), _key_looked_up(df),
    )


def to_iot_readings(df: DataFrame, run_id: str) -> DataFrame:
    return df.select(
        "reading_id", "device_id", "customer_key", "reading_ts", "temperature", "vibration",
        "battery", "error_code", *_meta(run_id), _anonymity(), _key_looked_up(df),
    )


@dataclass(frozen=True)
class TableSpec:
    """How one source becomes its silver table."""

    table: str
    key: tuple[str, ...]
    derived: tuple[str, ...]
    extras: Callable[[DataFrame, bytes, Reference], DataFrame]
    project: Callable[[DataFrame, str], DataFrame]
    # An id resolved through silver.identity_map when the record does not name its customer.
    lookup: tuple[str, str] | None = None  # (column, id_type)
    # False where no record names its customer (a post names a handle): every key is looked up.
    record_names_customer: bool = True

    @property
    def partition_by(self) -> tuple[str, ...]:
        """Partition columns of the table: the anonymity flag where customer_key is looked up."""
        return (ANONYMITY_PARTITION,) if self.lookup else ()

    @property
    def filled_with(self) -> tuple[str, ...]:
        """Columns that follow customer_key when a MERGE fills it in (see io.merge_newer):
        the anonymity flag, and KEY_LOOKED_UP, since a filled-in key is always a looked-up one
        (so a row written before that column existed gets it when its key is found)."""
        return (ANONYMITY_PARTITION, KEY_LOOKED_UP) if self.lookup else ()


TABLES: dict[str, TableSpec] = {
    "crm_customers": TableSpec(
        "customers", ("customer_key",),
        ("customer_key", "email_pseudonym", "phone_pseudonym", "handle_pseudonym"),
        lambda df, key, ref: with_customer_identity(df, key, ref), to_customers,
    ),
    "clickstream": TableSpec(
        "events", ("event_id",), ("customer_key",),
        lambda df, key, ref: with_customer_key(df, key), to_events, ("cookie_id", "cookie"),
    ),
    "orders": TableSpec(
        "orders", ("order_id",), ("customer_key", "amount_eur"),
        lambda df, key, ref: with_amount_eur(with_customer_key(df, key), ref), to_orders,
    ),
    "payments": TableSpec(
        "payments", ("payment_id",), ("amount_eur",),
        lambda df, key, ref: with_amount_eur(df, ref), to_payments,
    ),
    "social_posts": TableSpec(
        "social_posts", ("post_id",), ("handle_pseudonym", "customer_key", "keywords"),
        lambda df, key, ref: with_keywords(
            with_handle_pseudonym(df, key).withColumn("customer_key", F.lit(None).cast("string")),
            ref,
        ),
        to_social_posts, ("handle_pseudonym", "handle"), record_names_customer=False,
    ),
    "iot_readings": TableSpec(
        "iot_readings", ("reading_id",), ("customer_key",),
        lambda df, key, ref: with_customer_key(df, key), to_iot_readings, ("device_id", "device"),
    ),
}


def table_spec(source: SourceSpec) -> TableSpec:
    """The known spec, or the generic one for a newly declared source: its declared columns,
    typed, with non-PII columns only (a PII column needs a deliberate pseudonymisation)."""
    if source.name in TABLES:
        return TABLES[source.name]
    kept = [c for c in source.columns if c not in source.pii]

    def project(df: DataFrame, run_id: str) -> DataFrame:
        return df.select(*kept, *_meta(run_id))

    return TableSpec(source.name, source.natural_key, (), lambda df, key, ref: df, project)
