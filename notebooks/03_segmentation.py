# Databricks notebook source
# MAGIC %md
# MAGIC # Segmentation review
# MAGIC
# MAGIC K-means on RFM and behaviour features from `gold.customer_360`, trained by
# MAGIC `lakehouse run segment`: every candidate k is a nested MLflow run, the chosen model is
# MAGIC registered as `customer_segmentation` (alias `challenger`) and promoted to `champion`
# MAGIC only through the gate in `conf/base.yaml` (`segment.gate`). This notebook shows what a
# MAGIC reviewer checks before trusting the segments: silhouette per k, the gate decision, the
# MAGIC segment profile and sizes.

# COMMAND ----------

from pyspark.sql import Window
from pyspark.sql import functions as F

from lakehouse.notebook import open_notebook
from ml.tracking import configure_mlflow

nb = open_notebook(globals())
segments = nb.table("gold.customer_segments")
latest = segments.agg(F.max("as_of")).first()[0]
print(f"segments as of {latest}: {segments.where(F.col('as_of') == latest).count():,} customers")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Segment sizes (latest scoring)

# COMMAND ----------

nb.show(
    segments.where(F.col("as_of") == latest)
    .groupBy("segment_id", "segment_name", "model_version").count()
    .withColumn("share", F.round(F.col("count") / F.sum("count").over(Window.partitionBy()), 3))
    .orderBy("segment_id")
)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The registered model and its gate decision
# MAGIC Tags on each model version say whether the gate promoted it and why.

# COMMAND ----------

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

configure_mlflow(nb.config)
client = MlflowClient()
model_name = nb.config.get("segment.model_name")
champion = client.get_model_version_by_alias(model_name, "champion")
print(f"champion: version {champion.version}, run {champion.run_id}")
for found in client.search_model_versions(f"name = '{model_name}'"):
    # A search result carries no aliases: fetch each version for them.
    version = client.get_model_version(model_name, found.version)
    print(f"  version {version.version}: aliases {version.aliases}, tags {dict(version.tags)}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Silhouette per k (nested runs of the champion's training run)

# COMMAND ----------

runs = mlflow.search_runs(
    experiment_names=[nb.config.get("segment.experiment")],
    filter_string=f"tags.mlflow.parentRunId = '{champion.run_id}'",
)
metric_columns = [c for c in runs.columns if c.startswith("metrics.")]
print(runs[["run_id", *[c for c in runs.columns if c.startswith("params.k")], *metric_columns]]
      .to_string(index=False))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Segment profile and plots
# MAGIC The profile (size and mean features per segment) and the two plots are artifacts of the
# MAGIC champion's run; open them in the MLflow UI (`make mlflow-ui`) or read them here.

# COMMAND ----------

import pandas as pd  # noqa: E402

artifacts = [a.path for a in client.list_artifacts(champion.run_id)]
print("artifacts:", artifacts)
profile_files = [p for p in artifacts if p.endswith(".csv")]
if profile_files:
    local = mlflow.artifacts.download_artifacts(run_id=champion.run_id,
                                                artifact_path=profile_files[0])
    print(pd.read_csv(local).to_string(index=False))
