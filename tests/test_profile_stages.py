"""scripts/profile_stages.py's reading of an event log, on hand-written events (no Spark)."""

from __future__ import annotations

import json

from conftest import load_script

profile_stages = load_script("profile_stages")


def _start(job: int, ms: int, description=None, call_site=None, stage_name=None) -> str:
    props = {k: v for k, v in (("spark.job.description", description),
                               ("callSite.short", call_site)) if v is not None}
    return json.dumps({"Event": "SparkListenerJobStart", "Job ID": job, "Submission Time": ms,
                       "Properties": props, "Stage Infos": [{"Stage Name": stage_name}]})


def _end(job: int, ms: int) -> str:
    return json.dumps({"Event": "SparkListenerJobEnd", "Job ID": job, "Completion Time": ms})


def test_jobs_overlapping_in_two_threads_count_once_and_the_rest_is_driver_time():
    lines = [
        _start(0, 1_000, description="MERGE operation\nsecond line"),
        _start(1, 1_500, call_site="first at lakehouse/silver/job.py:215"),
        _end(0, 2_000),
        _end(1, 3_000),
        json.dumps({"Event": "SparkListenerStageCompleted"}),
        _start(2, 5_000, stage_name="save at NativeMethodAccessorImpl.java:0"),
        _end(2, 5_500),
        _start(3, 9_000),  # never ends inside the log: not counted
        _start(4, 20_000, call_site="later"),  # after the window
        _end(4, 21_000),
    ]
    jobs = profile_stages.jobs_from_event_log(lines)
    assert [j.site for j in jobs] == ["MERGE operation", "first at lakehouse/silver/job.py:215",
                                      "save at NativeMethodAccessorImpl.java:0", "later"]
    figures = profile_stages.breakdown(jobs, 0, 10_000, top=2)
    # Jobs ran 1.0-3.0 s (two of them, overlapping) and 5.0-5.5 s: 2.5 s of the 10 s window.
    assert figures["jobs"] == 3
    assert figures["job_seconds"] == 1.0 + 1.5 + 0.5
    assert figures["job_running_s"] == 2.5
    assert figures["driver_only_s"] == 7.5
    assert figures["top_sites"] == [
        {"site": "first at lakehouse/silver/job.py:215", "jobs": 1, "seconds": 1.5},
        {"site": "MERGE operation", "jobs": 1, "seconds": 1.0},
    ]


def test_a_job_running_past_the_window_counts_only_inside_it():
    jobs = [profile_stages.Job(500, 4_000, "a"), profile_stages.Job(3_000, 12_000, "b")]
    assert profile_stages.busy_ms(jobs, 1_000, 10_000) == 9_000
    assert profile_stages.busy_ms([profile_stages.Job(2_000, 3_000, "c")], 0, 10_000) == 1_000
