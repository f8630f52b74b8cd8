"""The shared erased lake's helpers (conftest.erased_lake, tests/test_erasure.py): who to erase
and how to search every file of a lake for them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import crm_customer_key
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def files_containing(root: Path, needle: str) -> list[str]:
    wanted = needle.lower().encode()
    return [str(p.relative_to(root)) for p in all_files(root) if wanted in p.read_bytes().lower()]


def raw_lines(root: Path) -> list[str]:
    return [line for p in (root / "raw").rglob("*") if p.is_file()
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines()]


def pick_person(spark, cfg) -> dict:
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
    lines = [line.lower() for line in raw_lines(root)]
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
