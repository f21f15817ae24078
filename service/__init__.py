"""The routing service: FastAPI API (torch-free), Celery workers, embedded Redis (docs/SERVICE.md)."""
