"""The Celery application: configuration shared by the API (which only sends) and the workers.

The API enqueues by task *name* (`TASK_*` below) and never imports `service.tasks`, so it never
imports torch. The reliability settings follow DESIGN §6 and Celery's own advice for long jobs:

- `acks_late` + `reject_on_worker_lost`: a task is acknowledged after it finishes, so a worker
  killed mid-shard hands the shard back to the queue; `JobStore.start_shard` caps the deliveries.
- `worker_prefetch_multiplier=1`: a busy worker holds no queued shard that an idle one could run.
- soft and hard time limits, and a broker visibility timeout above the hard limit (checked by
  `Settings`), so Redis never redelivers a task that is still running.
- JSON only, in both directions; results expire (`result_expires`): anything that must outlive
  them (route results, extracted weights) is written to the data dir.
"""

from __future__ import annotations

from celery import Celery

from service.settings import Settings

__all__ = [
    "INTERACTIVE_QUEUE",
    "ROUTE_QUEUE",
    "TASK_EXTRACT_SUBNET",
    "TASK_FEATURES",
    "TASK_ROUTE_MERGE",
    "TASK_ROUTE_SHARD",
    "create_celery",
]

TASK_ROUTE_SHARD = "sdr.route_shard"
TASK_ROUTE_MERGE = "sdr.route_merge"
TASK_EXTRACT_SUBNET = "sdr.extract_subnet"
TASK_FEATURES = "sdr.features"

# Long route shards and short request-bound tasks (weights, features) travel on separate queues,
# so a deployment can give the latter dedicated workers (`sdr worker --queues sdr.interactive`).
ROUTE_QUEUE = "sdr.route"
INTERACTIVE_QUEUE = "sdr.interactive"


def create_celery(settings: Settings, *, worker: bool = False) -> Celery:
    """A Celery app on the settings' broker.

    Args:
        worker: the workers' app: registers `service.tasks` and stores (expiring) task results.
            The API's app only sends by name; it has no result backend, so sending a task does not
            subscribe the API process to a result it never reads.
    """
    url = settings.effective_broker_url
    app = Celery("sdr", broker=url, backend=url if worker else None, include=["service.tasks"] if worker else [])
    transport = {"visibility_timeout": settings.visibility_timeout}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        result_expires=settings.result_expires,
        task_default_queue=ROUTE_QUEUE,
        task_routes={
            TASK_ROUTE_SHARD: {"queue": ROUTE_QUEUE},
            TASK_ROUTE_MERGE: {"queue": ROUTE_QUEUE},
            TASK_EXTRACT_SUBNET: {"queue": INTERACTIVE_QUEUE},
            TASK_FEATURES: {"queue": INTERACTIVE_QUEUE},
        },
        broker_connection_retry_on_startup=True,
        # A prefork child imports torch in `worker_process_init` (service.worker); on a busy
        # machine that exceeds Celery's 4 s default and the child would be killed and re-forked.
        worker_proc_alive_timeout=60,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        timezone="UTC",
    )
    return app
