"""spark-submit entry point: `spark-submit jobs/retention.py [--env cluster] [--as-of YYYY-MM-DD]`.

Runs the `retention` stage (data expiry and consent); see lakehouse/privacy/retention.py.
"""

from lakehouse.jobs import run_stage_job

if __name__ == "__main__":
    run_stage_job("retention")
