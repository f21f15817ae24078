"""One router per resource: datasets, route jobs, sub-nets, health and metrics."""
