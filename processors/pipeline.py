"""The one Beam graph: inputs -> ingest -> small tier -> route -> large tier -> sinks. Read top to bottom.

Runs in-process with FnApiRunner by default (named explicitly: DirectRunner would first try to fetch
the Prism runner from the network). The same graph runs on Dataflow/Flink/Spark through --runner.
"""

from __future__ import annotations

import logging
import os
import posixpath
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import apache_beam as beam
import fsspec
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from processors import sinks
from processors.ingest import ingest
from processors.ingest.pdf import pdf_doc_id
from processors.routing import overall_tier
from processors.tiers import TierModelHandler, needs_large
from schemas.config import Config
from schemas.records import Document, Rejected
from schemas.tables import RESULT_TABLES

log = logging.getLogger(__name__)
NAMESPACE = "sluicegate"


@dataclass
class RunSpec:
    """Everything one pipeline run needs; picklable, so it travels to remote workers."""

    run_id: str
    run_date: str  # YYYY-MM-DD
    inputs: list[tuple[str, str]]  # (uri, source)
    sources: list[str]  # sources whose partitions this run owns (written even when empty)
    config: Config
    config_hash: str
    out_root: str
    version_key: str = ""  # models + config + task/schema versions; the manifest records it
    done: frozenset[tuple[str, str]] = frozenset()  # (uri, doc_id) already done with version_key: skipped
    shard: str = "00000"
    extra: dict[str, str] = field(default_factory=dict)
    inbox: str = ""  # root the inputs must stay under (symlinks and '..' resolved); empty: not checked


@dataclass(frozen=True)
class AlreadyDone:
    """A PDF whose bytes this version already processed (in the manifest): recognised by its hash and
    never parsed again, so a rerun of a done date costs one read per PDF."""

    uri: str
    source: str
    doc_id: str


def read_and_ingest(item: tuple[str, str], config: Config, inbox: str | None = None,
                    done: frozenset[tuple[str, str]] = frozenset()) -> Iterator[Document | Rejected | AlreadyDone]:
    """Reads one input's bytes (any fsspec URL) and ingests it. I/O failures become retriable errors.

    inbox: the root every input must stay under. A path that leaves it (a symlink to elsewhere, '..')
    is an outside_root error and is never opened. done: (uri, doc_id) already processed with this
    version; such a PDF is not parsed (a ticket export is: its records are cheap and each has its own id).
    """
    uri, source = item
    escaped = outside_root(uri, inbox) if inbox else None
    try:
        if escaped:
            records: list = [Rejected(uri, source, "read", "outside_root", escaped)]
        else:
            with fsspec.open(uri, "rb") as f:
                size = getattr(f, "size", None)
                limit = config.pdf.max_bytes if source == "pdf" else config.tickets.max_bytes
                if size is not None and size > limit:
                    records = [Rejected(uri, source, "ingest", "too_large", f"{size} bytes > limit {limit}")]
                else:
                    # read at most limit + 1 bytes: a size the file system did not report cannot exhaust memory
                    data = f.read(limit + 1)
                    doc_id = pdf_doc_id(data) if source == "pdf" and done else ""
                    if (uri, doc_id) in done:
                        records = [AlreadyDone(uri, source, doc_id)]
                    else:
                        records = ingest(uri, source, data, config)
    except IsADirectoryError:
        records = [Rejected(uri, source, "read", "not_a_file", "the input is a directory (e.g. a linked one)")]
    except OSError as e:
        records = [Rejected(uri, source, "read", "read_failed", f"{type(e).__name__}: {e}"[:500], retriable=True)]
    for record in records:
        Metrics.counter(NAMESPACE, "inputs").inc()
        Metrics.counter(NAMESPACE, f"inputs_{source}").inc()
        crash_test_hook("ingest")
        yield record


def outside_root(uri: str, root: str) -> str | None:
    """Why `uri` is not under `root` (None: it is). Local paths are resolved (symlinks, '..') first."""
    if "://" in root or "://" in uri:
        if "://" in uri and not uri.startswith("file://"):
            path, base = posixpath.normpath(uri.split("://", 1)[1]), posixpath.normpath(root.split("://", 1)[-1])
            return None if path == base or path.startswith(base.rstrip("/") + "/") else \
                "the path leaves the inbox root ('..' or another location)"
        uri, root = uri.removeprefix("file://"), root.removeprefix("file://")
    real, base = os.path.realpath(uri), os.path.realpath(root)
    if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
        return None
    what = "a symbolic link" if os.path.islink(uri) else "the path"
    return f"{what} resolves outside the inbox root; it is not read"


KILL_ENV = "SLUICEGATE_TEST_KILL_AT"  # TEST HOOK: "<stage>[:<n>]", e.g. "write:2"
_kill_counts: dict[str, int] = {}
_kill_lock = threading.Lock()


def crash_test_hook(stage: str) -> None:
    """TEST HOOK for the crash-safety tests (tests/robustness/test_crash.py), inert unless SLUICEGATE_TEST_KILL_AT
    is set: the n-th time `stage` (ingest, inference, write, finish) is reached, the process SIGKILLs itself,
    like an OOM kill or a lost machine would, with no chance to clean up."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != stage:
        return
    with _kill_lock:
        _kill_counts[stage] = _kill_counts.get(stage, 0) + 1
        if _kill_counts[stage] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class _Keep:
    """Marks an input this run skipped: its existing rows stay in the rewritten partition."""

    uri: str


class _SkipDone(beam.DoFn):
    """Inputs already done with this version go to 'skipped' (their rows are kept, not recomputed)."""

    def __init__(self, done: frozenset[tuple[str, str]]):
        self._done = done

    def process(self, record: Document | Rejected | AlreadyDone) -> Iterator:
        if isinstance(record, AlreadyDone) or (record.uri, record.doc_id) in self._done:
            Metrics.counter(NAMESPACE, "skipped").inc()
            yield beam.pvalue.TaggedOutput("skipped", record)
        else:
            yield record


class _Split(beam.DoFn):
    """Documents to the main output; rejections (and documents a stage failed on) to 'errors'."""

    def __init__(self, kill_hook: str | None = None):
        self._kill_hook = kill_hook

    def process(self, record: Document | Rejected) -> Iterator:
        if self._kill_hook:
            crash_test_hook(self._kill_hook)
        if isinstance(record, Rejected):
            yield beam.pvalue.TaggedOutput("errors", record)
        elif record.error:
            yield beam.pvalue.TaggedOutput("errors", sinks.document_error(record))
        else:
            yield record


def _keyed_rows(spec: RunSpec) -> beam.PTransform:
    """Final documents -> ((table, source), row) for results and fields."""

    def rows(doc: Document) -> Iterable[tuple[tuple[str, str], dict]]:
        Metrics.counter(NAMESPACE, f"decided_{overall_tier(doc.decided_by)}").inc()
        yield ("results", doc.source), sinks.result_row(doc, spec.config, spec.run_id, spec.config_hash)
        for row in sinks.field_rows(doc, spec.config, spec.run_id):
            yield ("fields", doc.source), row
        yield ("manifest", doc.source), sinks.manifest_row(doc, spec.version_key, spec.run_id)

    return beam.FlatMap(rows)


class _WritePartition(beam.DoFn):
    def __init__(self, spec: RunSpec):
        self._spec = spec

    def process(self, element: tuple[tuple[str, str], Iterable[dict | _Keep | None]],
                after: list | None = None) -> Iterator[tuple[str, int]]:
        (table, source), items = element
        rows, keep = [], set()
        for item in items:
            if isinstance(item, _Keep):
                keep.add(item.uri)
            elif item is not None:
                rows.append(item)
        s = self._spec
        n = sinks.write_table_partition(s.out_root, table, s.run_date, source, rows, s.config, s.shard, keep)
        Metrics.counter(NAMESPACE, f"rows_{table}").inc(n)
        crash_test_hook("write")
        yield f"{table}/{source}", n


def build_pipeline(p: beam.Pipeline, spec: RunSpec) -> beam.PCollection:
    config = spec.config
    records = (
        p
        | "Inputs" >> beam.Create(spec.inputs)
        | "Reshuffle" >> beam.Reshuffle()  # spread files over workers before the expensive parse
        | "Ingest" >> beam.FlatMap(read_and_ingest, config, spec.inbox or None, spec.done)
    )
    todo = records | "SkipDone" >> beam.ParDo(_SkipDone(spec.done)).with_outputs("skipped", main="todo")
    ingested = todo.todo | "SplitIngest" >> beam.ParDo(_Split()).with_outputs("errors", main="docs")

    small = ingested.docs | "SmallTier" >> RunInference(TierModelHandler(config, "small"))
    after_small = small | "SplitSmall" >> beam.ParDo(_Split(kill_hook="inference")).with_outputs("errors", main="docs")

    kept, escalated = after_small.docs | "Route" >> beam.Partition(lambda d, _: int(needs_large(d)), 2)
    large = escalated | "LargeTier" >> RunInference(TierModelHandler(config, "large"))
    final_docs = (kept, large) | "AllDecided" >> beam.Flatten()

    doc_rows = final_docs | "Rows" >> _keyed_rows(spec)
    error_rows = (
        (ingested.errors, after_small.errors)
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> beam.FlatMap(lambda r: [(("errors", r.source), sinks.error_row(r, spec.run_id)),
                                                 (("manifest", r.source), sinks.manifest_row(r, spec.version_key,
                                                                                             spec.run_id))])
    )
    kept_rows = todo.skipped | "KeepSkipped" >> beam.FlatMap(
        lambda r: [((table, r.source), _Keep(r.uri)) for table in RESULT_TABLES])
    # Every partition this run owns is written, even empty, so a rerun replaces what an earlier run wrote.
    owned = p | "OwnedPartitions" >> beam.Create(
        [((table, source), None) for table in RESULT_TABLES for source in spec.sources])
    partitions = (
        (doc_rows, error_rows, kept_rows, owned)
        | "AllRows" >> beam.Flatten()
        | "ByPartition" >> beam.GroupByKey()
    )
    # The manifest says "done, skip next time": it is written only after every other partition is, so a
    # run killed between writes never leaves a manifest that points at rows that were not written.
    data, manifest = partitions | "ManifestLast" >> beam.Partition(lambda kv, _: int(kv[0][0] == "manifest"), 2)
    written = data | "Write" >> beam.ParDo(_WritePartition(spec))
    manifest_written = manifest | "WriteManifest" >> beam.ParDo(_WritePartition(spec),
                                                                after=beam.pvalue.AsList(written))
    return (written, manifest_written) | "Written" >> beam.Flatten()


def run_pipeline(spec: RunSpec, runner: str = "FnApiRunner", pipeline_args: list[str] | None = None) -> dict[str, int]:
    """Runs the graph and returns its counters (inputs, rows per table, decisions per tier)."""
    options = PipelineOptions(pipeline_args or [])
    if runner == "FnApiRunner":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        beam_runner = FnApiRunner()
    else:
        beam_runner = runner
    p = beam.Pipeline(runner=beam_runner, options=options)
    build_pipeline(p, spec)
    result = p.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for c in result.metrics().query(beam.metrics.MetricsFilter())["counters"]:
        metric = c.key.metric
        key = metric.name if metric.namespace == NAMESPACE else f"{metric.namespace}.{metric.name}"
        counters[key] = counters.get(key, 0) + (c.committed or c.attempted or 0)
    return counters
