# Databricks notebook source
# MAGIC %md
# MAGIC # Audit and privacy
# MAGIC
# MAGIC What an auditor and a privacy officer look at: the history of every table, the lineage
# MAGIC of a pipeline run back to the raw files, the tamper-evident hash chain over the audit
# MAGIC records, role-based views of a table, and an erasure walk-through. The erasure runs on a
# MAGIC scratch copy of the lake (never on the lake this notebook is pointed at).

# COMMAND ----------

from pyspark.sql import functions as F

from lakehouse.notebook import open_notebook

nb = open_notebook(globals(), {"role": "analyst", "table": "gold.customer_360"})

# COMMAND ----------

# MAGIC %md
# MAGIC ## Table history
# MAGIC `audit.table_history` holds every Delta version of every table (collected by
# MAGIC `lakehouse run audit`), with the operation, its metrics and the pipeline run that made it.

# COMMAND ----------

history = nb.table("audit.table_history")
nb.show(history.groupBy("table_name" if "table_name" in history.columns else "table")
        .agg(F.count("*").alias("versions")).orderBy(F.desc("versions")))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Lineage of the last run
# MAGIC Each stage run names what it read and wrote, with exact Delta versions, the code version
# MAGIC and the config digest; the same records are written as OpenLineage events.

# COMMAND ----------

lineage = nb.table("audit.lineage")
nb.show(lineage.orderBy(F.desc_nulls_last(lineage.columns[0])), rows=30)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Tamper evidence
# MAGIC Each audit record's hash covers the previous record's hash: editing or removing a record
# MAGIC breaks the chain at that record (`lakehouse audit verify` does the same from the CLI).

# COMMAND ----------

from lakehouse.audit import CHAINED_TABLES  # noqa: E402
from lakehouse.audit.chain import verify_chain  # noqa: E402

for name in CHAINED_TABLES:
    print(verify_chain(nb.spark, nb.catalog, name).line())

# COMMAND ----------

# MAGIC %md
# MAGIC ## What a role sees
# MAGIC `conf/access.yaml` says, per role and table, which columns are clear, masked or hidden and
# MAGIC which rows are visible; anything not listed is denied.

# COMMAND ----------

from lakehouse.errors import LakehouseError  # noqa: E402
from lakehouse.privacy.access import view  # noqa: E402

try:
    nb.show(view(nb.spark, nb.config, nb.params["role"], nb.params["table"]), rows=5)
except LakehouseError as denied:
    print(f"role {nb.params['role']}: {denied}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Erasure walk-through (on a scratch copy)
# MAGIC A test customer is erased from every layer; the rows disappear from silver and gold, and
# MAGIC the erasure log records the request without the person's data. The suppression list
# MAGIC (`audit.erasure_suppression`) holds keyed hashes of their identifiers: a source that
# MAGIC delivers them again is not landed by bronze.

# COMMAND ----------

import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from lakehouse.catalog import Catalog  # noqa: E402
from lakehouse.privacy.erasure import erase_subject  # noqa: E402

if nb.config.is_local_data_dir:
    scratch = Path(tempfile.mkdtemp(prefix="erasure-walkthrough-")) / "data"
    shutil.copytree(nb.config.data_dir, scratch, ignore=shutil.ignore_patterns("mlflow"))
    scratch_config = nb.config.with_overrides({"data_dir": str(scratch)})
    scratch_catalog = Catalog(scratch_config)
    # The restricted PII table names the person; everything else knows only customer_key.
    person = (scratch_catalog.read(nb.spark, "silver.customer_pii")
              .where(F.col("email").isNotNull()).orderBy("customer_key").first())
    key = person["customer_key"]
    before = scratch_catalog.read(nb.spark, "gold.customer_360").where(
        F.col("customer_key") == key).count()
    result = erase_subject(nb.spark, scratch_config, email=person["email"], echo=print)
    after = scratch_catalog.read(nb.spark, "gold.customer_360").where(
        F.col("customer_key") == key).count()
    print(f"gold.customer_360 rows of the test customer: {before} before, {after} after")
    nb.show(scratch_catalog.read(nb.spark, "audit.erasure_log"))
    nb.show(scratch_catalog.read(nb.spark, "audit.erasure_suppression")
            .groupBy("id_kind").count().orderBy("id_kind"))
    shutil.rmtree(scratch.parent, ignore_errors=True)
else:
    print("the walk-through copies the lake to a local scratch folder: local data roots only")
