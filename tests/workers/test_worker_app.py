"""The worker's Celery app keeps its tasks to itself, and picks a redelivery timeout by role."""

from __future__ import annotations

from celery import Celery

from lorebot import contracts
from tests.conftest import make_settings


def test_tasks_are_not_shared_with_other_celery_apps_in_the_process(tmp_path) -> None:
    # Celery's default adds every task to every app created later in the process: a test
    # harness app (or a second lorebot app) would then run this app's answer task with
    # this app's settings.
    from workers.app import create_app

    create_app(make_settings(tmp_path / "a"), warm=False)
    other = Celery("another-app")
    other.finalize()
    assert contracts.TASK_ANSWER not in other.tasks
    assert contracts.TASK_REFRESH not in other.tasks


def test_answer_only_workers_get_a_short_timeout_and_their_own_unacked_set(tmp_path) -> None:
    from workers.app import broker_config

    s = make_settings(tmp_path, worker={"answer_visibility_s": 300, "task_timeout_s": 120})
    answer = broker_config(s, ["answer"])["broker_transport_options"]
    jobs = broker_config(s, ["ingest", "train"])["broker_transport_options"]
    mixed = broker_config(s, ["answer", "ingest"])["broker_transport_options"]
    assert answer["visibility_timeout"] == 300 and answer["unacked_key"] == "unacked:answer"
    assert jobs["visibility_timeout"] >= 6 * 3600 and "unacked_key" not in jobs
    assert mixed == jobs  # a worker that may run a long job keeps the long timeout
    short = make_settings(tmp_path, worker={"answer_visibility_s": 30, "task_timeout_s": 120})
    assert broker_config(short, ["answer"])["broker_transport_options"]["visibility_timeout"] == 180
