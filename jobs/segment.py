"""spark-submit entry point: `spark-submit jobs/segment.py [--env cluster] [--as-of YYYY-MM-DD]`."""

from lakehouse.jobs import run_stage_job

if __name__ == "__main__":
    run_stage_job("segment")
