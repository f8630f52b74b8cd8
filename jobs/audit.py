"""spark-submit entry point: `spark-submit jobs/audit.py [--env cluster]`."""

from lakehouse.jobs import run_stage_job

if __name__ == "__main__":
    run_stage_job("audit")
