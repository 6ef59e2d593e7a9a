"""[engine]: validated against this machine, outside the version key; the flow's side of a sharded run."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from flows.engine import ShardReport, add_counters, shard_count, shard_table, with_engine, worker_config
from flows.nightly import config_hash, make_plan, recorded_rows
from processors.sinks import remove_parts_outside, rows_by_part
from schemas.config import Config, Engine

CORES = os.cpu_count() or 1


def test_engine_and_speed_options_change_no_output():
    base = Config()
    for other in (Config(engine=Engine(kind="dask", workers=1)), Config(engine=Engine(shards=7, retries=3)),
                  Config(schedule={"cron": "0 3 * * *"}), Config(alerts={"max_error_rate": 0.1}),
                  # in-process speed: the same bits on any thread count, copy or batch (test_llamacpp.py)
                  _tier(base, "small", threads=1, copies=2, parallel_sequences=3),
                  _tier(base, "large", threads=1, parallel_sequences=5)):
        assert config_hash(other) == config_hash(base)
    for other in (_tier(base, "small", max_doc_chars=100), _tier(base, "large", demonstrations=2)):
        assert config_hash(other) != config_hash(base)


def _tier(config: Config, tier: str, **changes) -> Config:
    return config.model_copy(update={tier: getattr(config, tier).model_copy(update=changes)})


def test_a_local_cluster_must_fit_the_cores():
    with pytest.raises(ValidationError, match="cores"):
        Engine(kind="dask", workers=CORES + 1)
    with pytest.raises(ValidationError, match="cores"):
        Engine(kind="dask", workers=1, threads_per_worker=CORES + 1)
    with pytest.raises(ValidationError, match="model_threads"):
        Engine(kind="dask", workers=1, model_threads=CORES + 1)
    # a remote cluster's size is its own business
    assert Engine(kind="dask", address="tcp://10.0.0.1:8786", workers=CORES + 1).workers == CORES + 1
    with pytest.raises(ValidationError, match="scheduler address"):
        Engine(kind="dask", address="10.0.0.1:8786")


def test_run_options_override_the_file_and_are_validated():
    config = Config()
    assert with_engine(config, None, None) is config
    assert with_engine(config, "dask", None).engine.kind == "dask"
    remote = with_engine(config, None, "tcp://h:8786").engine
    assert (remote.kind, remote.address) == ("dask", "tcp://h:8786")
    with pytest.raises(ValidationError):
        with_engine(Config(engine=Engine(workers=CORES + 1)), "dask", None)


def test_local_cluster_workers_share_the_cores_between_their_models():
    config = Config(engine=Engine(kind="dask", workers=1))
    assert worker_config(config).small.threads == CORES
    assert worker_config(Config(engine=Engine(kind="dask", workers=1, model_threads=1))).large.threads == 1
    local = Config()
    assert worker_config(local) is local  # kind = "local": the tiers keep their own threads


def test_shard_count():
    assert shard_count(Engine(), 50) == 1
    assert shard_count(Engine(shards=3), 50) == 3
    assert shard_count(Engine(kind="dask", workers=1, threads_per_worker=1), 50) == 2
    assert shard_count(Engine(kind="dask", workers=1, threads_per_worker=1), 1) == 1


def test_counters_add_up_once_per_shard_and_the_table_names_every_shard():
    reports = [ShardReport("00000", 2, 10, "completed", 1.0, "h:1", counters={"inputs": 3, "rows_results": 2},
                           loads={"small": 1, "large": 1}),
               ShardReport("00001", 0, 0, "completed", 0.5, "h:2", counters={"inputs": 0}),
               ShardReport("00002", 1, 5, "failed", message="KilledWorker")]
    assert add_counters(reports) == {"inputs": 3, "rows_results": 2}
    table = shard_table(reports)
    assert [r["shard"] for r in table] == ["00000", "00001", "00002"]
    assert table[0]["most_loads_of_a_model"] == 1 and table[1]["most_loads_of_a_model"] is None
    assert table[2]["state"] == "failed" and table[2]["message"] == "KilledWorker"


def _part(out, table: str, source: str, shard: str, uris: list[str]) -> None:
    folder = out / table / "run_date=2026-11-20" / f"source={source}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uri": uris}), folder / f"part-{shard}.parquet")


def test_the_plan_keeps_inputs_with_rows_on_their_shard(tmp_path):
    out = tmp_path / "out"
    _part(out, "results", "tickets", "00003", ["/in/a.jsonl#L1", "/in/a.jsonl#L2"])
    _part(out, "errors", "pdf", "00001", ["/in/b.pdf"])
    _part(out, "manifest", "tickets", "00002", ["/in/gone.jsonl#L1"])
    recorded = recorded_rows(str(out), "2026-11-20", ["tickets", "pdf"])
    assert rows_by_part(recorded.values()) == {
        ("tickets", "/in/a.jsonl#L1"): "00003", ("tickets", "/in/a.jsonl#L2"): "00003",
        ("pdf", "/in/b.pdf"): "00001", ("tickets", "/in/gone.jsonl#L1"): "00002"}
    inputs = [("/in/a.jsonl", "tickets"), ("/in/b.pdf", "pdf"), ("/in/c.pdf", "pdf")]
    plan = make_plan(inputs, frozenset([("tickets", "/in/gone.jsonl#L1")]), recorded, 1)
    where = {uri: s.name for s in plan for uri, _ in s.inputs}
    assert where == {"/in/a.jsonl": "00003", "/in/b.pdf": "00001", "/in/c.pdf": "00000"}
    assert {s.name: s.unseen for s in plan}["00002"] == frozenset([("tickets", "/in/gone.jsonl#L1")])


def test_part_files_outside_the_plan_are_removed(tmp_path):
    out = tmp_path / "out"
    for table in ("results", "manifest"):
        for shard in ("00000", "00001", "00002"):
            _part(out, table, "tickets", shard, ["/in/x"])
    _part(out, "results", "pdf", "00002", ["/in/y.pdf"])
    assert remove_parts_outside(str(out), "2026-11-20", ["tickets"], ["00000", "00001"]) == 2
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert left == ["manifest/run_date=2026-11-20/source=tickets/part-00000.parquet",
                    "manifest/run_date=2026-11-20/source=tickets/part-00001.parquet",
                    "results/run_date=2026-11-20/source=pdf/part-00002.parquet",  # not this run's source
                    "results/run_date=2026-11-20/source=tickets/part-00000.parquet",
                    "results/run_date=2026-11-20/source=tickets/part-00001.parquet"]


def test_input_sizes_never_open_an_input(tmp_path):
    """A named pipe would block the flow (no writer); a link may point outside the inbox: sizes come
    from metadata only, and the readers report those inputs."""
    from flows.nightly import TICKET_BYTES, input_sizes

    export = tmp_path / "export.jsonl"
    export.write_text("x" * (TICKET_BYTES * 40))
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"%PDF" * 100_000)
    pipe = tmp_path / "pipe.jsonl"
    os.mkfifo(pipe)
    sizes = input_sizes([(str(export), "tickets"), (str(pdf), "pdf"), (str(pipe), "tickets"),
                         (str(tmp_path / "gone.jsonl"), "tickets")])
    assert sizes == {str(export): 40, str(pdf): 1, str(pipe): 0, str(tmp_path / "gone.jsonl"): 0}
