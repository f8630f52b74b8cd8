# Databricks notebook source
# MAGIC %md
# MAGIC # Customer 360
# MAGIC
# MAGIC One row per customer (a pseudonymous `customer_key`, never a name or an email): orders,
# MAGIC spend, browsing, social activity and devices, valid at the end of the `as_of` day.
# MAGIC Column meanings are in `docs/tables.md`.

# COMMAND ----------

from pyspark.sql import functions as F

from lakehouse.notebook import open_notebook

nb = open_notebook(globals())
c360 = nb.table("gold.customer_360")
print(f"{c360.count():,} customers, as_of {c360.agg(F.max('as_of')).first()[0]}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Who buys
# MAGIC Customers who ordered, their spend, and how recency and frequency are spread.

# COMMAND ----------

summary = c360.agg(
    F.count("*").alias("customers"),
    F.sum(F.when(F.col("frequency") > 0, 1).otherwise(0)).alias("buyers"),
    F.round(F.sum("monetary"), 2).alias("revenue_eur"),
    F.round(F.avg("avg_order_value"), 2).alias("mean_order_value_eur"),
    F.expr("percentile_approx(recency_days, 0.5)").alias("median_recency_days"),
    F.round(F.avg(F.col("marketing_consent").cast("int")), 3).alias("consent_share"),
)
nb.show(summary)

# COMMAND ----------

nb.show(
    c360.groupBy("country")
    .agg(F.count("*").alias("customers"), F.round(F.sum("monetary"), 2).alias("revenue_eur"))
    .orderBy(F.desc("customers"))
)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Engagement and devices
# MAGIC Sessions and page views from the clickstream, posts and likes from social media, and the
# MAGIC device error rate for customers who own a connected device.

# COMMAND ----------

nb.show(
    c360.select("customer_key", "sessions", "page_views", "posts", "social_likes", "devices",
                "device_error_rate", "interest_keywords")
    .orderBy(F.desc("sessions"))
)

# COMMAND ----------

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

spend = c360.where("frequency > 0").select("monetary").toPandas()
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(spend["monetary"], bins=30)
ax.set_xlabel("spend per customer (EUR)")
ax.set_ylabel("customers")
ax.set_title("Spend of customers who ordered")
fig.tight_layout()
