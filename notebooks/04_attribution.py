# Databricks notebook source
# MAGIC %md
# MAGIC # Channel attribution: exact Markov chains against heuristics
# MAGIC
# MAGIC `gold.channel_attribution` holds, per `as_of`, the Markov removal-effect attribution
# MAGIC (order chosen on held-out journeys) next to first touch, last touch, linear, time decay
# MAGIC and position based, overall (`segment = 'all'`) and per customer segment.

# COMMAND ----------

from pyspark.sql import functions as F

from lakehouse.notebook import open_notebook

nb = open_notebook(globals(), {"as_of": ""})
attribution = nb.table("gold.channel_attribution")
as_of = nb.params["as_of"] or str(attribution.agg(F.max("as_of")).first()[0])
current = attribution.where(F.col("as_of") == as_of)
print(f"as_of {as_of}: {current.count()} rows, models "
      f"{sorted(r.model for r in current.select('model').distinct().collect())}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Markov next to the heuristics (all customers)

# COMMAND ----------

overall = current.where("segment = 'all'")
wide = (
    overall.groupBy("channel").pivot("model").agg(F.round(F.sum("attributed_conversions"), 2))
    .orderBy(F.desc("markov"))
)
nb.show(wide)
nb.show(overall.where("model = 'markov'")
        .select("channel", "order", F.round("removal_effect", 4).alias("removal_effect"),
                F.round("attributed_value", 2).alias("attributed_value_eur"))
        .orderBy(F.desc("removal_effect")))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Per segment
# MAGIC Present once segmentation has run (segments come from `gold.customer_segments`).

# COMMAND ----------

nb.show(
    current.where("model = 'markov' AND segment != 'all'")
    .groupBy("segment").agg(F.round(F.sum("attributed_conversions"), 2).alias("conversions"))
    .orderBy("segment")
)

# COMMAND ----------

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from ml.attribution.job import comparison_chart  # noqa: E402

chart = comparison_chart(current.toPandas(), Path(tempfile.mkdtemp()) / "attribution.png")
print(f"chart written to {chart}")
