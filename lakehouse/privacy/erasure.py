"""Erasure ("right to be forgotten"): remove one person from every layer, physically.

What happens, in order (the order matters for a re-run after a crash, see below):

1. The person is resolved to every identifier the lakehouse holds for them: customer_id(s),
   customer_key(s), emails, handles, email/phone/handle pseudonyms, cookie and device ids
   (silver.identity_map) and order ids (their payments carry no customer column).
2. Every Delta table of bronze, silver, gold and audit that has an identifying column loses the
   rows that match (generic over columns, so tables added later are covered): identifier
   columns by value, raw-line columns (``_raw``, ``raw``, ``raw_record``, ``_rescued_data``)
   by a token match. A browser or a device can be shared: a row found only by the person's
   cookie or device that bronze shows is another customer's is kept (shared_device_rows).
   The delete is a MERGE against a one-row source holding the identifiers,
   so the commit's recorded predicate names columns only: a ``DELETE ... WHERE email = '...'``
   would copy the email into the ``_delta_log`` for good.
3. Raw files under ``<data_dir>/raw`` that hold the person's lines are rewritten without them
   (a hidden temp file, then an atomic rename). The bronze stream's checkpoint records file
   names, so a rewritten file is not ingested again.
4. Physical: the suite creates its tables without deletion vectors, so the MERGE already
   rewrote the data files. A table that has them all the same (created by a session with
   Delta's or a cluster's defaults, or switched on later) only had the rows masked, its data
   files still holding them: ``REORG TABLE ... APPLY (PURGE)`` rewrites those files first
   (purge_deletion_vectors). VACUUM with ``privacy.erasure_vacuum_retention_hours`` then
   removes the old data files and the change-data-feed files (``_change_data``) that held the
   rows, in every table that held the person, also one whose current version no longer does
   (older_versions_hold_subject). With 0 hours, readers of an older snapshot that are running
   at that moment fail and time travel before the erasure is gone; that is the price of an
   erasure that is physical at once.
5. audit.erasure_log records the request without the person's data: request id, a keyed hash
   of the identifier asked for, each step (table or raw folder) with the rows it removed,
   timestamps and status.

Crash safety: each finished step is logged; a re-run resumes the open request and skips logged
steps. Tables the person is resolved from (orders, identity map, customers, customer_pii, bronze
CRM) are erased last, so a re-run can still resolve them. A repeated erase of an erased person
finds nothing, commits nothing and says so.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import os
import re
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.catalog import Catalog
from lakehouse.config import Config, file_uri_path, local_path
from lakehouse.errors import DataDirError, SubjectNotFoundError
from lakehouse.privacy.keycheck import lake_pseudonym_key
from lakehouse.privacy.pseudonym import pseudonym, trim_whitespace
from lakehouse.privacy.suppression import (
    SUPPRESSION_TABLE,
    identifier_hashes,
    record_suppression,
)
from lakehouse.sources import FILE_SUFFIXES

ERASURE_LOG = "audit.erasure_log"
ERASURE_LOG_SCHEMA = T.StructType(
    [
        T.StructField("request_id", T.StringType()),
        T.StructField("subject_hash", T.StringType()),
        T.StructField("step", T.StringType()),
        T.StructField("rows_deleted", T.LongType()),
        T.StructField("files_rewritten", T.LongType()),
        T.StructField("status", T.StringType()),
        T.StructField("recorded_at", T.TimestampType()),
    ]
)
# Audit tables of the privacy features themselves never hold a person's data.
SKIPPED_TABLES = frozenset({ERASURE_LOG, "audit.privacy_ledger", SUPPRESSION_TABLE})
# Erased last, in this order: the person is resolved from them, so a re-run after a crash can
# still find every identifier while any of them holds the person.
RESOLUTION_TABLES = (
    "silver.orders", "bronze.orders", "silver.identity_map", "silver.customers",
    "silver.customer_pii", "bronze.crm_customers",
)
ERASED_LAYERS = ("bronze", "silver", "gold", "audit")
# Where a person is resolved from first (customer id, email, handle, the raw CRM line).
CRM_BRONZE = "bronze.crm_customers"
# Every text file a source may deliver (the endings bronze takes per format, and .txt), plain
# or gzip; compared without case, so a file bronze skipped for its upper-case name is still
# cleaned. Derived, so a new format is erased as soon as bronze reads it.
RAW_SUFFIXES = tuple(sorted(
    {f".{end.removesuffix('.gz')}" for ends in FILE_SUFFIXES.values() for end in ends} | {".txt"}
))

# Identifier column -> field of the subject row it is compared with (by exact value).
VALUE_COLUMNS = {
    "customer_key": "customer_keys",
    "customer_id": "customer_ids",
    "cookie_id": "cookies",
    "device_id": "devices",
    "order_id": "order_ids",
    "email_pseudonym": "email_pseudonyms",
    "phone_pseudonym": "phone_pseudonyms",
    "handle_pseudonym": "handle_pseudonyms",
    "id_value": "id_values",
    "natural_key": "natural_keys",
}
RAW_COLUMNS = ("_raw", "raw", "raw_record", "_rescued_data")
# Identifier columns of a browser or a device, which people share (one family browser, one
# household's thermostat), and the subject field each is compared with.
SHARED_DEVICE_COLUMNS = {"cookie_id": "cookies", "device_id": "devices"}
# Columns that hold a whole raw line as bronze landed it (bronze's, and silver.quarantine's for
# a source without personal data): a kept row's line is compared with them.
LINE_COLUMNS = ("_raw", "raw")
# Frame column prefix: kept_key_<column> lists the kept rows' values of their natural key.
KEPT_KEY_PREFIX = "kept_key_"
# Kept values are looked up in hash buckets of about this many (kept_buckets), not in one list.
KEPT_PER_BUCKET = 4
NEVER = r"(?!x)x"  # a regex that matches nothing: keeps `rlike` defined without a token
# The customers a row on a shared browser or device may name (kept_on_shared_device).
CUSTOMERS = "silver.customers"


@dataclass(frozen=True)
class Subject:
    """Every identifier of one person (raw values: kept in memory only, never written)."""

    customer_ids: frozenset[str] = frozenset()
    customer_keys: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()
    handles: frozenset[str] = frozenset()  # normalised: lower-case, one leading '@'
    cookies: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    order_ids: frozenset[str] = frozenset()
    email_pseudonyms: frozenset[str] = frozenset()
    phone_pseudonyms: frozenset[str] = frozenset()
    handle_pseudonyms: frozenset[str] = frozenset()
    # Keyed hashes of their bronze CRM lines: silver.quarantine keeps a CRM record with its
    # personal fields withheld and this hash of the line (line_hmac), and a record without a
    # customer id has nothing else of theirs to be found by.
    line_hmacs: frozenset[str] = frozenset()
    # Only to tell another customer's row on a shared browser or device apart (keep_guard):
    # full names as "first last" (lower case) and phone numbers (digits only).
    names: frozenset[tuple[str, str]] = frozenset()
    phones: frozenset[str] = frozenset()

    @property
    def id_values(self) -> frozenset[str]:
        """silver.identity_map values that are the person's alone (not a cookie or device)."""
        return (self.customer_keys | self.email_pseudonyms | self.phone_pseudonyms
                | self.handle_pseudonyms)

    @property
    def raw_tokens(self) -> list[str]:
        """Lower-case strings whose occurrence (as a whole token) marks a raw line as theirs."""
        return sorted({*self.personal_tokens, *self.device_tokens})

    @property
    def personal_tokens(self) -> list[str]:
        """raw_tokens that are the person's alone: a line holding one is theirs, whoever it
        names (another customer's event with their email in its page is theirs too)."""
        return _tokens(self.customer_ids | self.customer_keys | self.emails | self.order_ids
                       | {h.lstrip("@") for h in self.handles} | self.line_hmacs)

    @property
    def device_tokens(self) -> list[str]:
        """raw_tokens of their cookies and devices, which another customer may share."""
        return _tokens(self.cookies | self.devices)

    @property
    def raw_pattern(self) -> str | None:
        """One Java/Python regex matching any token not embedded in a longer word."""
        return token_pattern(self.raw_tokens)

    @property
    def keep_guard(self) -> str:
        """A regex (lower-case text) that finds anything of the person in a text, more eagerly
        than raw_pattern: their own identifiers anywhere, also inside a longer word
        (``c0000111_profile``), their full name with anything but letters and digits between
        first and last (``ann+smith``, ``smith, ann``), and the last 8 digits of their phone
        with any separators (national and international forms share them). A row on a shared
        browser or device that it finds is not kept as another customer's; a false find costs
        that customer the row, a missed one would keep the person's data. Also found: the
        hex digests (SHA-256, SHA-1, MD5) of their email and of their phone's digits, which
        tracking tags send in place of the value, and first and last name up to 20 characters
        apart (a middle name). Not found: other encodings (base64, an initial for the name)."""
        parts = [re.escape(t) for t in self.personal_tokens]
        hashed = [e.encode() for e in self.emails]
        for first, last in sorted(self.names):
            if first and last:
                parts += [f"{re.escape(a)}[^a-z0-9]*{re.escape(b)}"
                          for a, b in ((first, last), (last, first))]
                parts += [f"{_word(a)}.{{0,20}}{_word(b)}" for a, b in ((first, last), (last, first))]
        for phone in sorted(self.phones):
            digits = re.sub(r"[^0-9]", "", phone)
            if len(digits) >= 6:
                parts.append("[^a-z0-9]*".join(digits[-8:]))
                hashed.append(digits.encode())
        parts += sorted({h(v).hexdigest() for v in hashed
                         for h in (hashlib.sha256, hashlib.sha1, hashlib.md5)})
        return "(" + "|".join(parts) + ")" if parts else NEVER

    def is_empty(self) -> bool:
        return not (self.customer_ids or self.customer_keys or self.emails or self.handles)


def _tokens(values: Iterable[str]) -> list[str]:
    return sorted({t.lower() for t in values if t and len(t) >= 4})


def _word(text: str) -> str:
    """A regex of ``text`` as a whole word (lower case)."""
    return rf"(?<![a-z0-9]){re.escape(text)}(?![a-z0-9])"


def token_pattern(tokens: list[str]) -> str | None:
    """A regex matching any of ``tokens`` (lower case) not embedded in a longer word."""
    if not tokens:
        return None
    return r"(?<![a-z0-9_])(" + "|".join(re.escape(t) for t in tokens) + r")(?![a-z0-9_])"


@dataclass(frozen=True)
class SharedDeviceRows:
    """Bronze rows on the person's browser or device that are another customer's (see
    shared_device_rows), and what erasure needs of them.

    ``keys``: natural key column -> the kept rows' values (as landed and as silver cleans
    them); ``lines``: their raw lines, as bytes (a line that is not UTF-8 keeps its bytes in
    Delta, and decoded it would not compare equal). ``another_customer``: a row on the
    person's browser or device names another customer silver knows, kept or not (gold may
    have given that customer the browser's anonymous visits, which the erasure deletes).
    """

    keys: dict[str, frozenset[str]] = field(default_factory=dict)
    lines: frozenset[bytes] = frozenset()
    another_customer: bool = False


@dataclass
class ErasureResult:
    request_id: str
    subject_hash: str
    rows_deleted: dict[str, int] = field(default_factory=dict)
    files_rewritten: dict[str, int] = field(default_factory=dict)
    vacuumed: list[str] = field(default_factory=list)
    already_erased: bool = False

    @property
    def total_rows(self) -> int:
        return sum(self.rows_deleted.values())


# -- identifiers -----------------------------------------------------------------------------


def keyed_hash(key: bytes, kind: str, value: str) -> str:
    """hex HMAC-SHA256 of ``kind:value``: equals ``pseudonym(kind, value)`` of Spark."""
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def normalise_email(value: str) -> str:
    return value.strip().lower()


def normalise_handle(value: str) -> str:
    bare = value.strip().lower().lstrip("@")
    return f"@{bare}" if bare else ""


def subject_hash(key: bytes, customer_id: str | None, email: str | None) -> str:
    """Keyed hash of what was asked for: the audit trail can match repeats, not read them."""
    if customer_id:
        return keyed_hash(key, "erasure", f"customer_id:{customer_id.strip()}")
    return keyed_hash(key, "erasure", f"email:{normalise_email(email or '')}")


def _strings(rows: Iterable, column: str) -> frozenset[str]:
    return frozenset(str(r[column]).strip() for r in rows if r[column] is not None
                     and str(r[column]).strip())


def resolve_subject(
    spark: SparkSession, catalog: Catalog, key: bytes,
    customer_ids: Iterable[str] = (), emails_asked: Iterable[str] = (), *, exact: bool = False,
) -> Subject:
    """Every identifier of the people asked for, from bronze and silver (small reads).

    Only what the lake holds counts: an id asked for is kept when a bronze customer_id column
    or silver.customer_pii (by its key) holds it exactly, an email when a CRM record or
    customer_pii does. Raw lines are matched by whole token without case, so an unresolved
    word taken as an identifier matched other people's lines: `--customer-id true` removed the
    CRM line of every customer who consents, `--email gmail.com` every Gmail customer's, and
    `--customer-id c0000001` removed C0000001's bronze rows but nothing of them in silver.

    ``exact`` (data expiry): only the customers asked for. Without it, a customer who shares an
    email with them (a second account) is resolved too, as an erasure request by a person
    means; with it, such an email or handle is not the subject's identifier at all (it stays
    with the customer who still holds it), and the subject's rows are found by their keys.
    """
    asked_ids = {i.strip() for i in customer_ids if i and i.strip()}
    asked_emails = {normalise_email(e) for e in emails_asked if e and e.strip()}
    ids: set[str] = set()
    emails: set[str] = set()
    handles: set[str] = set()
    line_hmacs: set[str] = set()
    names: set[tuple[str, str]] = set()
    phones: set[str] = set()

    def read(name: str) -> DataFrame | None:
        return catalog.read(spark, name) if catalog.exists(spark, name) else None

    crm = read(CRM_BRONZE)
    if crm is not None and (asked_ids or asked_emails):
        match = (trim_whitespace("customer_id").isin(sorted(asked_ids)) if asked_ids
                 else F.lit(False))
        if asked_emails:
            match = match | F.lower(trim_whitespace("email")).isin(sorted(asked_emails))
        rows = crm.where(match).select("customer_id", "email", "social_handle", "_raw",
                                       "first_name", "last_name", "phone").collect()
        # As silver's with_quarantine_raw computes it: pseudonym("raw", _raw), the line as is.
        line_hmacs = {keyed_hash(key, "raw", r["_raw"]) for r in rows if r["_raw"]}
        ids |= _strings(rows, "customer_id")
        emails |= {normalise_email(e) for e in _strings(rows, "email")}
        handles |= {normalise_handle(h) for h in _strings(rows, "social_handle")}
        _add_names_and_phones(rows, names, phones)
    ids |= _ids_held_in_bronze(spark, catalog, asked_ids - ids)
    asked_keys = {keyed_hash(key, "crm", i): i for i in asked_ids - ids}
    keys = {keyed_hash(key, "crm", i) for i in ids}

    pii = read("silver.customer_pii")
    if pii is not None and (keys or asked_keys or emails or asked_emails):
        known = sorted(keys | set(asked_keys))
        match = F.col("customer_key").isin(known) if known else F.lit(False)
        if (emails | asked_emails) and not exact:
            match = match | F.col("email").isin(sorted(emails | asked_emails))
        rows = pii.where(match).select("customer_key", "email", "social_handle", "first_name",
                                       "last_name", "phone").collect()
        found = _strings(rows, "customer_key")
        ids |= {asked_keys[k] for k in found if k in asked_keys}
        keys |= found
        emails |= {normalise_email(e) for e in _strings(rows, "email")}
        handles |= {normalise_handle(h) for h in _strings(rows, "social_handle")}
        _add_names_and_phones(rows, names, phones)

    by_type: dict[str, set[str]] = {}
    identity = read("silver.identity_map")
    if identity is not None and keys:
        for r in identity.where(F.col("customer_key").isin(sorted(keys))).select(
            "id_type", "id_value"
        ).collect():
            by_type.setdefault(r["id_type"], set()).add(r["id_value"])

    order_ids: set[str] = set()
    orders = read("silver.orders")
    if orders is not None and keys:
        order_ids |= _strings(
            orders.where(F.col("customer_key").isin(sorted(keys))).select("order_id").collect(),
            "order_id",
        )
    raw_orders = read("bronze.orders")
    if raw_orders is not None and ids:
        order_ids |= _strings(
            raw_orders.where(F.trim("customer_id").isin(sorted(ids))).select("order_id")
            .collect(), "order_id",
        )
    handles.discard("")
    if exact:
        _drop_shared_identifiers(read("silver.customers"), key, keys, emails, handles, by_type)
    return Subject(
        customer_ids=frozenset(ids),
        customer_keys=frozenset(keys),
        emails=frozenset(emails),
        handles=frozenset(handles),
        cookies=frozenset(by_type.get("cookie", set())),
        devices=frozenset(by_type.get("device", set())),
        order_ids=frozenset(order_ids),
        email_pseudonyms=frozenset(by_type.get("email", set()))
        | {keyed_hash(key, "email", e) for e in emails},
        phone_pseudonyms=frozenset(by_type.get("phone", set())),
        handle_pseudonyms=frozenset(by_type.get("handle", set()))
        | {keyed_hash(key, "handle", h) for h in handles},
        line_hmacs=frozenset(line_hmacs),
        names=frozenset(names),
        phones=frozenset(phones),
    )


def _add_names_and_phones(rows: list, names: set[tuple[str, str]], phones: set[str]) -> None:
    """Adds, in place, the full names (first, last; lower case) and phones of CRM rows."""
    for r in rows:
        first, last = (str(r[c] or "").strip().lower() for c in ("first_name", "last_name"))
        if first and last:
            names.add((first, last))
        if r["phone"] and str(r["phone"]).strip():
            phones.add(str(r["phone"]).strip())


def _drop_shared_identifiers(
    customers: DataFrame | None, key: bytes, keys: set[str], emails: set[str],
    handles: set[str], by_type: dict[str, set[str]],
) -> None:
    """Removes, in place, every email, phone and handle that a customer other than ``keys``
    also holds (silver.customers' pseudonyms): it is theirs too, and the subject's own rows
    are found by the subject's keys. For data expiry, which is one customer's, not a person's."""
    if customers is None:
        return
    emails_by_hash = {keyed_hash(key, "email", e): e for e in emails}
    handles_by_hash = {keyed_hash(key, "handle", h): h for h in handles}
    wanted = {
        "email": by_type.setdefault("email", set()) | set(emails_by_hash),
        "phone": by_type.setdefault("phone", set()),
        "handle": by_type.setdefault("handle", set()) | set(handles_by_hash),
    }
    held_elsewhere = F.lit(False)
    for kind, values in wanted.items():
        if values:
            held_elsewhere = held_elsewhere | F.col(f"{kind}_pseudonym").isin(sorted(values))
    if keys:
        held_elsewhere = held_elsewhere & ~F.col("customer_key").isin(sorted(keys))
    others = customers.where(held_elsewhere).select(
        "email_pseudonym", "phone_pseudonym", "handle_pseudonym").collect()
    for kind in wanted:
        shared = {row[f"{kind}_pseudonym"] for row in others} & wanted[kind]
        by_type[kind] -= shared
        if kind == "email":
            emails -= {emails_by_hash[h] for h in shared if h in emails_by_hash}
        if kind == "handle":
            handles -= {handles_by_hash[h] for h in shared if h in handles_by_hash}


# -- pure parts: the match condition and the raw-line filter ---------------------------------


def _ids_held_in_bronze(spark: SparkSession, catalog: Catalog, ids: set[str]) -> set[str]:
    """Those of ``ids`` that a bronze table's customer_id column holds (trimmed, exactly): a
    person whose CRM record never landed may still have orders or signed-in events. The CRM
    table itself is left out: resolve_subject has searched it for them already."""
    held: set[str] = set()
    for name in (t for t in erasable_tables(catalog)
                 if t.startswith("bronze.") and t != CRM_BRONZE):
        wanted = sorted(ids - held)
        if not wanted:
            break
        df = catalog.read(spark, name)
        if "customer_id" in df.columns:
            rows = (df.select(trim_whitespace("customer_id").alias("customer_id"))
                    .where(F.col("customer_id").isin(wanted)).distinct().collect())
            held |= _strings(rows, "customer_id")
    return held


def erasure_condition(
    schema: T.StructType, kept_key_columns: Iterable[str] = ()
) -> str | None:
    """SQL condition (target ``t``, one-row subject ``s``) that matches the person's rows.

    None when the table has no identifying column (aggregates, metrics): nothing to erase.
    Only column names appear in it, never a value. A row is the person's when it holds one of
    their own identifiers (personal_condition), or one of their cookies or devices
    (device_condition) and is not a kept row of another customer on that shared browser or
    device: its natural key is one of ``s.kept_key_<column>`` (``kept_key_columns``: the
    columns the frame lists) and its raw line, where it has one, one of ``s.kept_lines``.
    """
    names = {f.name for f in schema.fields}
    personal = personal_condition(names)
    device = device_condition(names)
    parts = [p for p in (personal, device) if p]
    if not parts:
        return None
    if device:
        kept = _kept_condition(names, kept_key_columns)
        if kept:
            parts[-1] = f"(({device}) AND NOT coalesce({kept}, false))"
    return " OR ".join(parts)


def personal_condition(names: Iterable[str]) -> str | None:
    """SQL: the row (``t``) holds one of the person's own identifiers; None: no such column."""
    names = set(names)
    parts = [
        f"array_contains(s.{field_name}, trim(cast(t.`{column}` as string)))"
        for column, field_name in VALUE_COLUMNS.items()
        if column in names and column not in SHARED_DEVICE_COLUMNS
    ]
    if "email" in names:
        parts.append("array_contains(s.emails, lower(trim(cast(t.`email` as string))))")
    for column in ("social_handle", "handle"):
        if column in names:
            parts.append(
                f"array_contains(s.handles, concat('@', regexp_replace(lower(trim("
                f"cast(t.`{column}` as string))), '^@+', '')))"
            )
    parts += [
        f"coalesce(lower(cast(t.`{c}` as string)) rlike s.pattern, false)"
        for c in RAW_COLUMNS if c in names
    ]
    return " OR ".join(f"({p})" for p in parts) if parts else None


def device_condition(names: Iterable[str]) -> str | None:
    """SQL: the row (``t``) holds one of the person's cookies or devices; None: no column."""
    names = set(names)
    parts = [
        f"array_contains(s.{field_name}, trim(cast(t.`{column}` as string)))"
        for column, field_name in SHARED_DEVICE_COLUMNS.items() if column in names
    ]
    if "id_value" in names:  # silver.identity_map
        parts.append("array_contains(s.device_values, trim(cast(t.`id_value` as string)))")
    parts += [
        f"coalesce(lower(cast(t.`{c}` as string)) rlike s.device_pattern, false)"
        for c in RAW_COLUMNS if c in names
    ]
    return " OR ".join(f"({p})" for p in parts) if parts else None


def kept_buckets(values: Iterable[bytes]) -> list[list[bytes]]:
    """``values`` in hash buckets (about KEPT_PER_BUCKET each) by CRC-32, which Spark SQL's
    crc32 computes alike: _in_kept_buckets then reads one bucket per row.

    One list read whole for every row on the device (array_contains) cost rows x kept rows: a
    thermostat reporting every minute under another customer's id keeps half a million
    readings in a year."""
    distinct = sorted(set(values))
    buckets: list[list[bytes]] = [[] for _ in range(max(1, len(distinct) // KEPT_PER_BUCKET))]
    for value in distinct:
        buckets[zlib.crc32(value) % len(buckets)].append(value)
    return buckets


def _in_kept_buckets(field_name: str, value: str, as_binary: str) -> str:
    """SQL: ``value`` (``as_binary``: the same as UTF-8 bytes) is in kept_buckets' frame column
    ``field_name``; null when the value is."""
    bucket = f"cast(pmod(crc32({as_binary}), size(s.`{field_name}`)) + 1 as int)"
    return f"array_contains(element_at(s.`{field_name}`, {bucket}), {value})"


def _kept_condition(names: set[str], kept_key_columns: Iterable[str]) -> str | None:
    """SQL: the row is one of the kept rows (shared_device_rows): its natural key is listed,
    and its raw line too where it has one. None when the table has neither, or no raw line and
    no listed key column (nothing to tell a kept row by: it goes)."""
    keys = [
        _in_kept_buckets(f"{KEPT_KEY_PREFIX}{c}", f"cast(t.`{c}` as string)",
                         f"cast(cast(t.`{c}` as string) as binary)")
        for c in sorted(set(kept_key_columns) & names)
    ]
    lines = [_in_kept_buckets("kept_lines", f"cast(t.`{c}` as binary)", f"cast(t.`{c}` as binary)")
             for c in LINE_COLUMNS if c in names]
    if not keys and not lines:
        return None
    parts = ([" OR ".join(keys)] if keys else []) + lines
    return " AND ".join(f"({p})" for p in parts)


def kept_key_columns(source_df: DataFrame) -> list[str]:
    """The natural key columns a subject frame lists kept rows by."""
    return [c.removeprefix(KEPT_KEY_PREFIX) for c in source_df.columns
            if c.startswith(KEPT_KEY_PREFIX)]


def subject_frame(
    spark: SparkSession, subject: Subject, kept: SharedDeviceRows | None = None
) -> DataFrame:
    """The person's identifiers as one row of arrays (the MERGE source), with the rows kept on
    a shared browser or device (``kept``)."""
    kept = kept or SharedDeviceRows()
    arrays = {
        "customer_keys": subject.customer_keys, "customer_ids": subject.customer_ids,
        "cookies": subject.cookies, "devices": subject.devices, "order_ids": subject.order_ids,
        "email_pseudonyms": subject.email_pseudonyms,
        "phone_pseudonyms": subject.phone_pseudonyms,
        "handle_pseudonyms": subject.handle_pseudonyms, "id_values": subject.id_values,
        "device_values": subject.cookies | subject.devices,
        "natural_keys": subject.customer_ids | subject.order_ids,
        "emails": subject.emails, "handles": subject.handles,
    }
    kept_keys = {
        f"{KEPT_KEY_PREFIX}{c}": [[v.decode() for v in bucket]
                                  for bucket in kept_buckets(v.encode() for v in values)]
        for c, values in sorted(kept.keys.items())
    }
    schema = T.StructType(
        [T.StructField(k, T.ArrayType(T.StringType())) for k in arrays]
        + [T.StructField(k, T.ArrayType(T.ArrayType(T.StringType()))) for k in kept_keys]
        + [T.StructField("kept_lines", T.ArrayType(T.ArrayType(T.BinaryType()))),
           T.StructField("pattern", T.StringType()),
           T.StructField("device_pattern", T.StringType()),
           T.StructField("keep_guard", T.StringType())]
    )
    patterns = [token_pattern(subject.personal_tokens) or NEVER,
                token_pattern(subject.device_tokens) or NEVER, subject.keep_guard]
    return spark.createDataFrame(
        [(*[sorted(v) for v in arrays.values()], *kept_keys.values(), kept_buckets(kept.lines),
          *patterns)], schema)


def without_subject_lines(
    lines: list[bytes], pattern: re.Pattern[str], device_pattern: re.Pattern[str] | None = None,
    kept_lines: frozenset[bytes] = frozenset(),
) -> tuple[list[bytes], int]:
    """Lines that do not belong to the person, and how many did.

    A line is theirs when ``pattern`` (their own identifiers) matches it, or ``device_pattern``
    (their cookies and devices) does and it is not one of ``kept_lines`` (the raw lines of
    bronze rows kept as another customer's, compared as line_bytes gives them: a line bronze
    has not landed cannot be told from the person's, and goes). Lines stay bytes, kept
    exactly as delivered (line endings, bytes that are not UTF-8): only the person's lines
    leave the file.
    """
    kept_bytes = {line_bytes(k) for k in kept_lines}

    def theirs(line: bytes) -> bool:
        text = _as_text(line).lower()
        if pattern.search(text):
            return True
        return bool(device_pattern and device_pattern.search(text)
                    and line_bytes(line) not in kept_bytes)

    kept = [line for line in lines if not theirs(line)]
    return kept, len(lines) - len(kept)


def line_bytes(line: bytes) -> bytes:
    """A raw line's bytes as bronze's ``_raw`` holds them (cast to binary), to compare a file's
    line with it: without its line ending and without a UTF-8 byte-order mark."""
    return bytes(line).removesuffix(b"\n").removesuffix(b"\r").removeprefix(b"\xef\xbb\xbf")


def _as_text(line: bytes) -> str:
    # surrogateescape: a byte that is not UTF-8 (a damaged delivery, which bronze keeps as a
    # malformed line) cannot stop an erasure; the identifiers searched for are plain text.
    return line.decode("utf-8", errors="surrogateescape")


def raw_text_files(root: Path) -> list[Path]:
    """The delivered raw files under ``root`` a person's lines may be in, sorted."""
    def is_raw(path: Path) -> bool:
        name = path.name.lower().removesuffix(".gz")
        return (path.is_file() and not path.name.startswith((".", "_"))
                and name.endswith(RAW_SUFFIXES))
    return sorted(p for p in root.rglob("*") if is_raw(p)) if root.is_dir() else []


def read_raw_lines(path: Path) -> list[bytes]:
    """The lines of a raw file (gzip files decompressed), each with its own line ending."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.decompress(data)
    return data.splitlines(keepends=True)


def write_raw_lines(path: Path, lines: list[bytes]) -> None:
    """Replaces ``path`` atomically with ``lines`` (gzip again where it was)."""
    data = b"".join(lines)
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    # Hidden name: the bronze file source ignores files starting with '.', so a stream
    # running now never sees the half-written copy; rename is atomic on one file system.
    tmp = path.with_name(f".{path.name}.erasure-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- I/O edge --------------------------------------------------------------------------------


def shared_device_rows(
    spark: SparkSession, config: Config, catalog: Catalog, subject: Subject, key: bytes
) -> SharedDeviceRows:
    """The bronze rows on the person's browser or device that are another customer's
    (kept_on_shared_device, over every bronze table with a cookie or device column, a
    customer_id and a one-column natural key; the customers known are silver.customers')."""
    from lakehouse.sources import load_sources

    if not (subject.cookies or subject.devices) or not catalog.exists(spark, CUSTOMERS):
        return SharedDeviceRows()
    by_table = {s.bronze_table: s for s in load_sources(config).values()}
    probe = subject_frame(spark, subject)
    known = catalog.read(spark, CUSTOMERS).select("customer_key")
    found = [
        kept_on_shared_device(catalog.read(spark, name), probe, by_table[name].natural_key[0],
                              subject, key, known)
        for name in erasable_tables(catalog)
        if name in by_table and len(by_table[name].natural_key) == 1
    ]
    keys: dict[str, frozenset[str]] = {}
    for rows in found:
        for column, values in rows.keys.items():
            keys[column] = keys.get(column, frozenset()) | values
    return SharedDeviceRows(keys, frozenset().union(*(r.lines for r in found)),
                            any(r.another_customer for r in found))


# A text is URL-decoded this many times over (a redirect target is encoded twice) before the
# keep guard looks at it.
DECODE_ROUNDS = 3


def _holds_subject(text: str) -> str:
    """SQL: the text (a non-null column) holds something of the person (``s.keep_guard``), as
    delivered or after each of DECODE_ROUNDS URL decodings, with an '@' written as an HTML
    entity or '(at)' read as one. A text that does not decode, or still holds an escape after
    the last round, counts as holding it (what it hides cannot be checked)."""
    def found(value: str, otherwise: str) -> str:
        at = f"regexp_replace(lower({value}), '&#(x0*40|0*64);|[(]at[)]', '@')"
        return f"coalesce({at} rlike s.keep_guard, {otherwise})"

    rounds, decoded = [found(text, "false")], text
    for _ in range(DECODE_ROUNDS):
        decoded = f"try_url_decode({decoded})"
        rounds.append(found(decoded, "true"))
    rounds.append(f"coalesce({decoded} rlike '%[0-9a-fA-F]{{2}}', true)")
    return f"({text} IS NOT NULL AND ({' OR '.join(rounds)}))"


def kept_on_shared_device(
    df: DataFrame, source_df: DataFrame, key_column: str, subject: Subject, key: bytes,
    known_customers: DataFrame,
) -> SharedDeviceRows:
    """The rows of one bronze table (``df``) on the person's browser or device that are another
    customer's (``source_df``: subject_frame without kept rows; ``key_column``: the natural key;
    ``known_customers``: customer_key of every customer silver holds).

    A browser or a device can be shared: another customer logs in on the family browser, a
    household's thermostat reports under either's id. Such a row is theirs, and erasure keeps
    it (in bronze, silver, silver.quarantine and the raw file) when, in bronze, where the whole
    delivered line is:
    - it holds the person's cookie or device, and nothing of theirs that Subject.keep_guard
      finds (their identifiers even inside a longer word, their full name, their phone) in any
      column or anywhere in its line, as delivered or URL-decoded up to DECODE_ROUNDS times
      (their email in a page, ``ann%2540example.com``, ``c0000111_profile``); a text that does
      not URL-decode counts as holding something of theirs;
    - its customer_id, cleaned as silver cleans it, is a customer silver knows who is not the
      person (by key; their id in another case is caught in the line): a blank,
      ``undefined`` or ``guest`` names nobody;
    - no other version of the same record (natural key, cleaned as silver does) is the person's.
    Decided in bronze only: silver's looked-up keys follow the cookie's first owner and prove
    nothing. Anything else on the device goes, as a row naming nobody is taken as theirs.
    The kept rows are collected (a year of a device's readings every minute is half a million
    short lines) and every row on the device is looked up in their hash buckets
    (kept_buckets).
    Bronze's suppression list still refuses every later row on the device (its rows could
    hold the person's data in a free text, which a keyed hash cannot find).
    """
    from lakehouse.silver.cleanse import clean_string

    names = set(df.columns)
    personal, device = personal_condition(names), device_condition(names)
    if device is None or personal is None or not {"customer_id", "_raw", key_column} <= names:
        return SharedDeviceRows()
    hidden = " OR ".join(_holds_subject(f"t.`{c}`") for c, kind in df.dtypes if kind == "string")
    # The person's id in another case is theirs: the line's token match (without case, in
    # `personal`) finds it, so it is not compared here again.
    customer = clean_string(F.col("t.customer_id"))
    customer_key = pseudonym("crm", customer, key, normalised=True)
    not_theirs = customer.isNotNull() & ~customer_key.isin(sorted(subject.customer_keys))
    record = clean_string(F.col(f"t.`{key_column}`"))
    known = known_customers.select(F.col("customer_key").alias("_known_key"),
                                   F.lit(True).alias("_known")).distinct()
    matched = (
        df.alias("t").crossJoin(F.broadcast(source_df.alias("s")))
        .where(f"({personal}) OR ({device})")
        .select(
            F.col(f"t.`{key_column}`").cast("string").alias("landed_key"),
            record.alias("record"), F.col("t._raw").alias("line"),
            F.expr(f"coalesce({personal}, false) OR {hidden}").alias("theirs_inside"),
            not_theirs.alias("names_another"), customer_key.alias("_named_key"),
        )
        .join(F.broadcast(known), F.col("_named_key") == F.col("_known_key"), "left")
        .select("*", (~F.col("theirs_inside") & F.col("names_another")
                      & F.coalesce(F.col("_known"), F.lit(False))
                      & F.col("record").isNotNull() & F.col("line").isNotNull())
                     .alias("candidate"))
    )
    # Kept only when every matched version of the record is a candidate: one pass over the
    # matched rows (a join of them with their own non-candidates read the table twice).
    every_version = F.min(F.col("candidate").cast("int")).over(Window.partitionBy("record"))
    decided = matched.select("*", (F.col("candidate") & (every_version == 1)).alias("kept"))
    # The kept rows, and those naming another known customer that are not kept (few: they
    # hold something of the person's).
    names_known = F.col("names_another") & F.coalesce(F.col("_known"), F.lit(False))
    found = decided.where(F.col("kept") | names_known).select(
        "kept", "landed_key", "record", F.col("line").cast("binary").alias("line")).collect()
    kept = [r for r in found if r["kept"]]
    keys = {r["landed_key"] for r in kept} | {r["record"] for r in kept}
    return SharedDeviceRows({key_column: frozenset(keys)} if keys else {},
                            frozenset(bytes(r["line"]) for r in kept), bool(found))


T_ = TypeVar("T_")


def erasable_tables(catalog: Catalog) -> list[str]:
    """Delta tables of the erased layers, resolution tables last (see module docstring)."""
    found: list[str] = []
    for layer in ERASED_LAYERS:
        folder = local_path(catalog.root) / "lake" / layer
        if folder.is_dir():
            found += sorted(
                f"{layer}.{p.name}" for p in folder.iterdir() if (p / "_delta_log").is_dir()
            )
    found = [t for t in found if t not in SKIPPED_TABLES]
    first = [t for t in found if t not in RESOLUTION_TABLES]
    return first + [t for t in RESOLUTION_TABLES if t in found]


def subject_rows(df: DataFrame, source_df: DataFrame) -> DataFrame | None:
    """The rows of ``df`` (as ``t``) that match the person (``source_df``: subject_frame, as
    ``s``, beside each row); None when ``df`` has no identifying column."""
    condition = erasure_condition(df.schema, kept_key_columns(source_df))
    if condition is None:
        return None
    return df.alias("t").crossJoin(F.broadcast(source_df.alias("s"))).where(condition)


def count_subject_rows(
    spark: SparkSession, catalog: Catalog, name: str, source_df: DataFrame
) -> int:
    matches = subject_rows(catalog.read(spark, name), source_df)
    return 0 if matches is None else matches.count()


def retained_files(table: DataFrame, root: Path) -> list[Path]:
    """Data and change-data files under ``root``, the folder of the Delta table read as
    ``table``, that its current version does not read: those of older versions, kept for
    time travel until VACUUM removes them."""
    current = {file_uri_path(f) for f in table.inputFiles()}
    return sorted(
        p for p in root.rglob("*.parquet")
        if "_delta_log" not in p.relative_to(root).parts and p not in current
    )


def older_versions_hold_subject(
    spark: SparkSession, catalog: Catalog, name: str, source_df: DataFrame
) -> bool:
    """Whether files that only older versions of ``name`` read still hold the person.

    A table can have lost the person before the erasure and still keep them for time travel:
    gold rebuilt for a date before their signup, journeys and segments rebuilt after they
    withdrew consent. Its current rows count none, so without this check it was neither
    erased nor vacuumed, and `diff` or `restore` brought the person back. The files are read
    with the table's current schema (a column older files lack reads as null); when they
    cannot be read so, they are taken to hold the person (VACUUM costs time travel, not data).
    """
    table = catalog.read(spark, name)
    if erasure_condition(table.schema) is None:
        return False
    root = local_path(catalog.path(name))
    files = retained_files(table, root)
    if not files:
        return False
    try:
        older = (spark.read.schema(table.schema).option("basePath", str(root))
                 .parquet(*(str(p) for p in files)))
        matches = subject_rows(older, source_df)
        return matches is not None and not matches.isEmpty()
    except PySparkException:
        return True


def delete_subject_rows(
    spark: SparkSession, catalog: Catalog, name: str, source_df: DataFrame,
    rows: int | None = None,
) -> int:
    """Delete the person's rows from one table; 0 (and no commit) when it holds none.

    ``rows``: their number when the caller has just counted them.
    """
    if rows is None:
        rows = count_subject_rows(spark, catalog, name, source_df)
    if rows == 0:
        return 0
    condition = erasure_condition(catalog.read(spark, name).schema, kept_key_columns(source_df))
    before = catalog.current_version(spark, name)
    (
        catalog.delta_table(spark, name).alias("t")
        .merge(F.broadcast(source_df.alias("s")), condition)
        .whenMatchedDelete()
        .execute()
    )
    if name.startswith("bronze."):
        _advance_stage_progress(spark, catalog, name, before, catalog.current_version(spark, name))
    return rows


def _advance_stage_progress(
    spark: SparkSession, catalog: Catalog, bronze_table: str, before: int | None, after: int | None
) -> None:
    """A stage that had read bronze up to the erasure skips the erasure's own version.

    That version adds no rows. Catalog.read_inserts could read past it anyway (by row-tracked
    version, from the whole snapshot), but skipping it keeps the next silver run on bronze's
    change feed, which reads only the new files.
    """
    progress = "audit.stage_progress"
    if before is None or after is None or not catalog.exists(spark, progress):
        return
    behind = (F.col("bronze_table") == bronze_table) & (F.col("bronze_version") == before)
    if catalog.read(spark, progress).where(behind).isEmpty():
        return
    catalog.delta_table(spark, progress).update(
        condition=behind, set={"bronze_version": F.lit(after).cast("long")}
    )


def raw_patterns(subject: Subject) -> tuple[re.Pattern[str], re.Pattern[str] | None] | None:
    """(their own identifiers, their cookies and devices) as regexes; None without any."""
    if not subject.raw_tokens:
        return None
    device = token_pattern(subject.device_tokens)
    return (re.compile(token_pattern(subject.personal_tokens) or NEVER),
            re.compile(device) if device else None)


def rewrite_raw_files(
    catalog: Catalog, subject: Subject, kept: SharedDeviceRows | None = None
) -> dict[str, tuple[int, int]]:
    """Raw files without the person's lines: {folder: (lines removed, files rewritten)}.
    The lines of rows ``kept`` on a shared browser or device stay."""
    if not catalog.config.is_local_data_dir:
        raise DataDirError("erasure of raw files needs a local data_dir (or a storage job)")
    patterns = raw_patterns(subject)
    root = local_path(catalog.raw_root)
    if patterns is None:
        return {}
    kept_lines = kept.lines if kept else frozenset()
    out: dict[str, tuple[int, int]] = {}
    for path in raw_text_files(root):
        kept_in_file, removed = without_subject_lines(read_raw_lines(path), *patterns, kept_lines)
        if not removed:
            continue
        write_raw_lines(path, kept_in_file)
        folder = path.parent.relative_to(root).as_posix()
        lines_before, files_before = out.get(folder, (0, 0))
        out[folder] = (lines_before + removed, files_before + 1)
    return out


def vacuum_now(spark: SparkSession, catalog: Catalog, name: str, retention_hours: float) -> None:
    """VACUUM with the erasure retention; under the 7-day safety minimum only for this call."""
    vacuum_tables_now(spark, catalog, [name], retention_hours)


# Per-table steps that do not depend on each other (counting the person's rows, VACUUM) run this
# many at a time: on a lake of small tables each one is mostly fixed latency (listing files,
# replaying the log, starting jobs), which overlaps.
TABLE_WORKERS = 4


def _for_each_table(step: Callable[[str], T_], names: Iterable[str]) -> list[T_]:
    """step(name) for every table, TABLE_WORKERS at a time; results in the order of names."""
    names = list(names)
    if len(names) <= 1:
        return [step(n) for n in names]
    with ThreadPoolExecutor(max_workers=TABLE_WORKERS, thread_name_prefix="erasure") as pool:
        return list(pool.map(step, names))


def purge_deletion_vectors(spark: SparkSession, table) -> bool:
    """Rewrite the data files of a DeltaTable that rows were deleted from through deletion
    vectors (``REORG TABLE ... APPLY (PURGE)``); True when the table supports them.

    A delete on such a table only records which rows of a file are gone: the file keeps them,
    and VACUUM keeps the file as long as the table uses it. A table that never had the feature
    is left alone (no commit).
    """
    detail = table.detail().select("tableFeatures", "location").first()
    if "deletionVectors" not in (detail["tableFeatures"] or []):
        return False
    location = detail["location"].replace("`", "``")
    spark.sql(f"REORG TABLE delta.`{location}` APPLY (PURGE)").collect()
    return True


def vacuum_tables_now(
    spark: SparkSession, catalog: Catalog, names: Iterable[str], retention_hours: float
) -> None:
    """VACUUM each table with the erasure retention, under the 7-day safety minimum only for
    these calls (the check is a session setting: switched once around all of them, as the
    VACUUMs run side by side); files with deletion vectors are purged first, so that no file
    the table still uses holds a deleted row."""
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(check, "true")
    spark.conf.set(check, "false")

    def purge_and_vacuum(name: str) -> None:
        table = catalog.delta_table(spark, name)
        purge_deletion_vectors(spark, table)
        table.vacuum(float(retention_hours))

    try:
        _for_each_table(purge_and_vacuum, names)
    finally:
        spark.conf.set(check, previous)


def _log_rows(spark: SparkSession, catalog: Catalog) -> list:
    if not catalog.exists(spark, ERASURE_LOG):
        return []
    return catalog.read(spark, ERASURE_LOG).collect()


def _requests(
    spark: SparkSession, catalog: Catalog, subject_id: str
) -> tuple[list, set[str], list[str]]:
    """The log rows of ``subject_id``, its completed request ids, and its open ones (planned,
    never completed: a run that crashed), oldest first."""
    log = [r for r in _log_rows(spark, catalog) if r["subject_hash"] == subject_id]
    completed = {r["request_id"] for r in log if r["status"] == "complete"}
    open_requests = sorted(
        {r["request_id"] for r in log if r["request_id"] not in completed},
        key=lambda rid: min(r["recorded_at"] for r in log if r["request_id"] == rid),
    )
    return log, completed, open_requests


def has_open_request(spark: SparkSession, catalog: Catalog, subject_id: str) -> bool:
    """Whether a request logged under ``subject_id`` was planned and never completed (a run
    that crashed: erase_people with the same subject completes it)."""
    return bool(_requests(spark, catalog, subject_id)[2])


def _append_log(spark: SparkSession, catalog: Catalog, rows: list[tuple]) -> None:
    """One commit to audit.erasure_log (rows without their timestamp, added here)."""
    from lakehouse.silver.io import append

    now = datetime.now(UTC).replace(tzinfo=None)
    df = spark.createDataFrame([(*r[:4], int(r[4]), r[5], now) for r in rows], ERASURE_LOG_SCHEMA)
    append(spark, catalog, ERASURE_LOG, df)


def erase_subject(
    spark: SparkSession, config: Config, *, customer_id: str | None = None,
    email: str | None = None, echo: Callable[[str], None] = lambda _line: None,
    stop_after: str | None = None,
) -> ErasureResult:
    """Erase one person (by customer id or email) from every layer; see the module docstring.

    ``stop_after`` (tests only) stops right after that step, as a crash would.
    """
    if bool(customer_id) == bool(email):
        raise ValueError("give exactly one of customer_id or email")
    key = lake_pseudonym_key(spark, config)
    who = "customer id" if customer_id else "email"
    return erase_people(
        spark, config, subject_hash(key, customer_id, email),
        customer_ids=[customer_id] if customer_id else [], emails=[email] if email else [],
        not_found=(f"no data held for the {who} given (checked bronze, silver, gold and raw "
                   f"files): check the {who}; nothing was changed"),
        echo=echo, stop_after=stop_after, key=key, suppress=True,
    )


def erase_people(
    spark: SparkSession, config: Config, subject_id: str, *, customer_ids: Iterable[str] = (),
    emails: Iterable[str] = (), not_found: str | None = None,
    echo: Callable[[str], None] = lambda _line: None, stop_after: str | None = None,
    key: bytes | None = None, suppress: bool = False, exact: bool = False,
) -> ErasureResult:
    """Erase everyone named (one request, logged under ``subject_id``, a keyed hash).

    ``exact``: only the customers named, not others sharing an email with them (see
    resolve_subject; data expiry is per customer).

    ``suppress``: also list their identifiers' keyed hashes in audit.erasure_suppression, so
    that bronze does not land them again when a source re-delivers them (an erasure request;
    not data expiry, see lakehouse.privacy.suppression).

    The log gets one commit with the plan (status ``planned``: each table and the raw files
    with the rows found) before anything is deleted, and one with the outcome (``done`` per
    step, then ``complete``) after VACUUM. A re-run finds the open request, deletes what is
    still there (a step already done finds nothing and commits nothing) and vacuums every
    planned table, so a crash anywhere in between is completed by running the same command.

    ``not_found``: message of the SubjectNotFoundError raised when nothing is held and no
    earlier request for ``subject_id`` exists; None = return an empty result instead.
    ``stop_after`` (tests only) stops right after that step, as a crash would.
    """
    catalog = Catalog(config)
    key = key or lake_pseudonym_key(spark, config, catalog)
    log, completed, open_requests = _requests(spark, catalog, subject_id)
    request_id = open_requests[-1] if open_requests else uuid.uuid4().hex
    planned_before = {r["step"] for r in log if r["request_id"] == request_id}
    result = ErasureResult(request_id, subject_id)

    subject = resolve_subject(spark, catalog, key, list(customer_ids), list(emails),
                              exact=exact)
    kept = shared_device_rows(spark, config, catalog, subject, key)
    source_df = subject_frame(spark, subject, kept).cache()
    try:
        tables = erasable_tables(catalog)
        counts = dict(zip(tables, _for_each_table(
            lambda t: count_subject_rows(spark, catalog, t, source_df), tables), strict=True))
        holds_raw = bool(raw_files_holding(catalog, subject, kept))
        plan = {t: n for t, n in counts.items() if n}
        # Planned with no row to delete: only vacuumed (and logged, so that a re-run after a
        # crash vacuums them too).
        not_now = [t for t in tables if t not in plan]
        older_only = [t for t, held in zip(not_now, _for_each_table(
            lambda t: older_versions_hold_subject(spark, catalog, t, source_df), not_now),
            strict=True) if held]
        plan.update(dict.fromkeys(older_only, 0))
        if holds_raw:
            plan["raw"] = 0
        listed = 0
        if suppress and (plan or open_requests or completed):
            # First: a delivery that lands while this request runs (or after it crashed) is
            # already held back by bronze.
            listed = record_suppression(spark, catalog, request_id,
                                        identifier_hashes(key, subject))
        if not plan and not open_requests:
            if completed or not_found is None:
                result.already_erased = bool(completed)
                if listed:
                    echo(f"erase: nothing held for this person any more (already erased); "
                         f"{listed} identifier hash(es) added to {SUPPRESSION_TABLE}")
                else:
                    echo("erase: nothing held for this person any more (already erased); "
                         "nothing changed" if completed else "erase: nothing to erase")
                return result
            raise SubjectNotFoundError(not_found)
        new_steps = {step: n for step, n in plan.items() if step not in planned_before}
        if new_steps:
            _append_log(spark, catalog, [
                (request_id, subject_id, step, n, 0, "planned") for step, n in new_steps.items()
            ])

        def crash_point(step: str) -> None:
            if stop_after == step:
                raise _SimulatedCrash(step)

        early = [t for t in tables if t not in RESOLUTION_TABLES]
        late = [t for t in tables if t in RESOLUTION_TABLES]
        for name in early:
            _erase_table(spark, catalog, name, source_df, counts[name], result, echo)
            crash_point(name)
        if holds_raw:
            for folder, (lines, files) in rewrite_raw_files(catalog, subject, kept).items():
                result.files_rewritten[f"raw/{folder}"] = files
                result.rows_deleted[f"raw/{folder}"] = lines
                echo(f"  raw/{folder:<28} -{lines:>6} lines in {files} file(s) rewritten")
            crash_point("raw")
        for name in late:
            _erase_table(spark, catalog, name, source_df, counts[name], result, echo)
            crash_point(name)
    finally:
        source_df.unpersist()
    # Gold gives a shared browser's anonymous visits to the customer who logged in next: the
    # other customer's profile and journeys may count visits the erasure deleted. A re-run
    # of an interrupted request rebuilds them too (what bronze shows may have gone since).
    rebuilt = rebuild_gold_aggregates(
        spark, config, request_id, echo,
        with_customer_tables=kept.another_customer or bool(open_requests))
    crash_point("aggregates")

    # Physical: every table of the plan, including one planned by a run that crashed, and the
    # aggregates whose older versions still count the person.
    touched = sorted((({s for s in planned_before} | set(plan)) & set(tables)) | set(rebuilt))
    hours = config.get("privacy.erasure_vacuum_retention_hours")
    vacuum_tables_now(spark, catalog, touched, hours)
    result.vacuumed.extend(touched)
    for name in older_only:
        echo(f"  {name:<32}  only older versions held the person: vacuumed")
    removed = remove_reproduce_copies(config)
    if removed:
        echo(f"  {config.get('audit.scratch_dir')}: {removed} run(s) rebuilt by `lakehouse "
             f"reproduce` removed (copies of older table versions)")
    outcome = [
        (request_id, subject_id, step, n, result.files_rewritten.get(step, 0), "done")
        for step, n in result.rows_deleted.items()
    ]
    outcome.append((request_id, subject_id, "complete", result.total_rows,
                    sum(result.files_rewritten.values()), "complete"))
    _append_log(spark, catalog, outcome)
    echo(f"erase: request {request_id}: {result.total_rows} rows removed from "
         f"{len(result.rows_deleted)} places, {len(result.vacuumed)} tables vacuumed "
         f"(retention {hours}h)")
    return result


def remove_reproduce_copies(config: Config) -> int:
    """Remove every run `lakehouse reproduce` rebuilt (its scratch folder); their number.

    They are gold and attribution tables rebuilt from older input versions and kept outside
    the lake's layers, where no table step of the erasure reaches them: any of them may hold
    the person. They are disposable (reproduce rebuilds a run while its inputs' versions can
    still be read), so they go whole, without a search."""
    from lakehouse.audit.reproduce import reproduce_scratch_dir

    if not config.is_local_data_dir:
        return 0
    folder = local_path(reproduce_scratch_dir(config))
    if not folder.is_dir():
        return 0
    runs = sum(1 for p in folder.iterdir() if p.is_dir())
    shutil.rmtree(folder)
    return runs


AGGREGATE_TABLES = ("kpi_daily", "kpi_channel_daily")
CUSTOMER_TABLES = ("customer_360", "journeys")


def rebuild_gold_aggregates(
    spark: SparkSession, config: Config, request_id: str, echo: Callable[[str], None],
    with_customer_tables: bool = False,
) -> list[str]:
    """Rebuild the gold KPI tables from the erased silver for the as_of they hold, and with
    ``with_customer_tables`` gold.customer_360 and gold.journeys as well.

    The KPI tables carry no identifier to delete by, yet their daily orders, revenue and active
    customers counted the person; the next gold run would fix that, an erasure must not wait
    for it. The customer tables lost the person's rows by key, but another customer's may
    count the anonymous visits on a browser they shared (attribute_shared_browsers).
    Deterministic, so a re-run after a crash rebuilds the same figures.
    """
    from lakehouse.gold import gold_options, run_gold

    catalog = Catalog(config)
    names = [f"gold.{t}" for t in AGGREGATE_TABLES]
    if not all(catalog.exists(spark, n) for n in names):
        return []
    as_of = catalog.read(spark, names[0]).agg(F.max("as_of")).first()[0]
    if as_of is None:
        return []
    tables = AGGREGATE_TABLES + tuple(
        t for t in CUSTOMER_TABLES if with_customer_tables and catalog.exists(spark, f"gold.{t}"))
    names = [f"gold.{t}" for t in tables]
    lines = run_gold(spark, config, f"erasure-{request_id}", as_of, tables=tables,
                     refuse_before_data=False, **gold_options(config))
    for line in lines[1:]:
        # run_gold's own warnings (unseen channel names) are not tables: passed on as they are.
        echo(line if line.lstrip().startswith("warning:") else f"{line}  (rebuilt without the person)")
    return names


class _SimulatedCrash(RuntimeError):
    """Raised by ``stop_after`` to test resuming after a crash."""


def raw_files_holding(
    catalog: Catalog, subject: Subject, kept: SharedDeviceRows | None = None
) -> list[Path]:
    """The raw files that hold a line of the person (one rewrite_raw_files would remove)."""
    patterns = raw_patterns(subject)
    if patterns is None:
        return []
    kept_lines = kept.lines if kept else frozenset()
    return [p for p in raw_text_files(local_path(catalog.raw_root))
            if without_subject_lines(read_raw_lines(p), *patterns, kept_lines)[1]]


def _erase_table(
    spark: SparkSession, catalog: Catalog, name: str, source_df: DataFrame, expected: int,
    result: ErasureResult, echo: Callable[[str], None],
) -> None:
    if not expected:
        return
    rows = delete_subject_rows(spark, catalog, name, source_df, expected)
    result.rows_deleted[name] = rows
    echo(f"  {name:<32} -{rows:>6} rows")
