"""Prefect flows, deployments and the CLI. Thin: discovery, I/O, retries, artifacts."""
