# Databricks notebook source
# MAGIC %md
# MAGIC # A tour of the lakehouse
# MAGIC
# MAGIC Bronze keeps every raw line as it landed, silver holds clean, deduplicated and
# MAGIC pseudonymised tables, gold the customer 360, journeys and KPIs, audit the history and the
# MAGIC quality figures. Every table is a Delta table: each write is a version you can read back.
# MAGIC
# MAGIC Parameters (widgets on Databricks, `LAKEHOUSE_NB_<NAME>` variables locally):
# MAGIC `env` (config overlay), `data_dir` (empty: the config's data root), `table` (the table the
# MAGIC time-travel cells look at).

# COMMAND ----------

from lakehouse.catalog import LAYERS
from lakehouse.notebook import open_notebook

nb = open_notebook(globals(), {"table": "silver.customers"})
print(f"data root: {nb.config.data_dir}  (env {nb.config.env})")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Layers and row counts
# MAGIC Every table the catalog can find under the data root, with its current version.

# COMMAND ----------

import pandas as pd  # noqa: E402

rows = []
for layer in LAYERS:
    for name in nb.catalog.tables(layer):
        rows.append({
            "table": name,
            "version": nb.catalog.current_version(nb.spark, name),
            "rows": nb.table(name).count(),
        })
inventory = pd.DataFrame(rows)
print(inventory.to_string(index=False))
assert not inventory.empty, "no tables yet: run `lakehouse run all` first"

# COMMAND ----------

# MAGIC %md
# MAGIC ## Time travel
# MAGIC The table's history (one row per version), then the same table read as of its first
# MAGIC version next to its current state.

# COMMAND ----------

table = nb.params["table"]
history = nb.catalog.delta_table(nb.spark, table).history()
nb.show(history.select("version", "timestamp", "operation", "operationMetrics"))

first = nb.table(table, version=0)
now = nb.table(table)
print(f"{table}: {first.count():,} rows at version 0, {now.count():,} rows now")

# COMMAND ----------

# MAGIC %md
# MAGIC ## What changed between two versions
# MAGIC The change data feed lists the rows inserted, updated and deleted between versions.

# COMMAND ----------

latest = nb.catalog.current_version(nb.spark, table)
changes = (
    nb.spark.read.format("delta").option("readChangeFeed", "true")
    .option("startingVersion", 0).option("endingVersion", latest)
    .load(nb.catalog.path(table))
)
nb.show(changes.groupBy("_change_type", "_commit_version").count()
        .orderBy("_commit_version", "_change_type"))
