"""The Celery app that bench/compare measures (imported by the worker and by the driver).

Redis is both broker and result backend. Everything this app writes lives under the key
prefix in LOVAGE_COMPARE_PREFIX (kombu's and the result backend's `global_keyprefix`), in the
database named by LOVAGE_COMPARE_REDIS, so the run can delete exactly its own keys afterwards.
"""

import os

from celery import Celery

REDIS = os.environ.get("LOVAGE_COMPARE_REDIS", "redis://127.0.0.1:6379/12")
PREFIX = os.environ.get("LOVAGE_COMPARE_PREFIX", "lovage-compare-manual-celery:")
QUEUE = "lovage-compare"

app = Celery("lovage_compare", broker=REDIS, backend=REDIS)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    # No broadcast (pidbox) and no events: they would use fan-out channels outside the
    # prefix, and a plain task benchmark does not need them. Defaults otherwise
    # (prefetch multiplier 4, acks early, results stored).
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
)


@app.task(name="compare.noop")
def noop():
    return None


@app.task(name="compare.ident")
def ident(i):
    return i


@app.task(name="compare.total")
def total(values):
    return sum(values)
