"""Shared fixtures. Real components only: the real small model, real files, a real embedded Prefect."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.settings import apply_defaults

apply_defaults()

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
FIXTURE_DATE = "2026-11-20"

# The head of a small run configuration for the end-to-end tests: inbox/ and out/ beside the file, one
# sentiment task. Each test appends its own tiers, fields and limits.
SENTIMENT_RUN = """
[inputs]
inbox = "inbox"
sources = ["tickets"]
[output]
root = "out"
[[tasks]]
name = "sentiment"
labels = ["negative", "neutral", "positive"]
question = "Is the writer's tone negative, neutral or positive?"
"""


def free_port() -> int:
    """A port nothing listens on (bound, then closed): for a server a test starts, or to be refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_ticket_days(root: Path, days: list, per_day: int = 2) -> None:
    """<root>/inbox/tickets/<day>/export.jsonl for each day: `per_day` good fixture tickets (different each
    day) and one broken line, so every run has results and an error."""
    lines = (FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl").read_text().splitlines()
    good = [line for line in lines if line.strip().endswith("}")]
    for i, day in enumerate(days):
        folder = root / "inbox" / "tickets" / str(day)
        folder.mkdir(parents=True)
        chosen = good[per_day * i: per_day * (i + 1)]
        (folder / "export.jsonl").write_text("\n".join([*chosen, '{"broken": ']) + "\n")


def start_process(args: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """A process with its output in log, in a session of its own: kill_tree ends it without touching pytest's."""
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGTERM to the process's group and to the groups of all its descendants, then SIGKILL."""
    import psutil  # installed with dask.distributed, not a dependency of its own
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    groups = {proc.pid}
    for p in procs:
        try:
            groups.add(os.getpgid(p.pid))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgrp())  # never our own
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        if not alive:
            break
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def start_prefect_server(root: Path, procs: list[subprocess.Popen], **settings: str) -> tuple[str, dict[str, str]]:
    """`prefect server start` on a free loopback port, its home and log under root, appended to procs (the
    caller kills them). Returns its API URL and the environment of processes that use it."""
    from flows.deployments import wait_healthy

    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(root / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **settings}
    prefect = str(Path(sys.executable).parent / "prefect")
    procs.append(start_process([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               root / "server.log", env, root))
    wait_healthy(api_url, timeout=300, server=procs[-1])
    return api_url, env | {"PREFECT_API_URL": api_url}


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """One real Prefect server (its URL) for the tests' `sluicegate` subprocesses: each would otherwise start its
    own embedded one (10-18 s each on a busy machine). Its own PREFECT_HOME and process group. The README
    example's run (tests/test_readme.py) keeps the embedded server, as a user types it."""
    root = tmp_path_factory.mktemp("prefect-server")
    procs: list[subprocess.Popen] = []
    try:
        try:
            url, _ = start_prefect_server(root, procs)
        except (RuntimeError, TimeoutError) as e:
            pytest.fail(f"{e}\n{(root / 'server.log').read_text()[-2000:]}")
        yield url
    finally:
        for proc in procs:
            kill_tree(proc)


@pytest.fixture(scope="module")
def prefect_in_process(prefect_api: str) -> Iterator[str]:
    """Flows called in this process report to the session's Prefect server: prefect_test_harness would start
    one more server per module (20-26 s each on a loaded machine)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield prefect_api


@pytest.fixture(scope="session")
def config():
    from schemas.config import load_config

    # The base model: unit tests of the mechanics do not depend on which model version is shipped.
    # The end-to-end runs load the file as a user does, with the promoted version (models/).
    return load_config(FIXTURES / "sluicegate.toml")


@pytest.fixture(scope="session")
def small_runtime(config):
    """The real Gemma 3 270M in llama.cpp, loaded once for the session (about 2 s)."""
    from processors.models import load_runtime

    runtime = load_runtime(config.small)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def linear_category(tmp_path_factory):
    """A real tier 0 for bitext categories, fitted on 800 training tickets (a few seconds): (labeler, path)."""
    from processors.datasets import load_examples, sample
    from processors.linear import LinearLabeler

    train = sample(load_examples(SHARED_DATA / "tickets/bitext/train.csv"), 800, stratify="category")
    labeler = LinearLabeler.fit([e.text for e in train], [e.labels["category"] for e in train])
    path = tmp_path_factory.mktemp("tier0") / "linear-category.json"
    labeler.save(path)
    return LinearLabeler.load(path), path
