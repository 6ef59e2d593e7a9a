"""The one Beam graph: inputs -> ingest -> small tier -> route -> large tier -> route -> sinks. Read top to bottom.

The only module that imports Beam: the steps here are thin shells over plain functions (reading in
processors/ingest/read.py, a tier's answers and routing in processors/tiers.py, rows in processors/sinks.py).
Runs in-process with FnApiRunner by default (named explicitly: DirectRunner would first try to fetch
the Prism runner from the network). The same graph runs on Dataflow/Flink/Spark through --runner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from processors import sinks
from processors.faults import FaultPlan, checkpoint, pass_checkpoint
from processors.ingest.read import AlreadyDone, read_and_ingest
from processors.progress import Progress
from processors.routing import overall_tier
from processors.tiers import TierOnDemand, answer_batch, needs_large, route_after, tier_config
from schemas.config import Config
from schemas.records import Document, Rejected, Tier
from schemas.tables import RESULT_TABLES


def _import_beam_inference():
    """Beam's RunInference module, without the PyTorch and SciPy imports it does not need here.

    Beam 2.77 imports its ModelManager eagerly, and that imports PyTorch and SciPy wherever they are installed
    (the finetune extra): 6 s more for every run, CLI call and dask worker. We use no ModelManager (it is off
    by default), and Beam imports it lazily when one is asked for. So the module is hidden for this one
    import only; Beam then also sets its `resource` module (memory figures at model load) to None, restored here.
    """
    import resource
    import sys

    name = "apache_beam.ml.inference.model_manager"
    hidden = name not in sys.modules
    if hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import` raise ImportError
    try:
        from apache_beam.ml.inference import base
    finally:
        if hidden and sys.modules.get(name, 0) is None:
            del sys.modules[name]
    if base.resource is None:
        base.resource = resource
    return base


_inference = _import_beam_inference()
ModelHandler, RunInference = _inference.ModelHandler, _inference.RunInference

NIGHT_INTERVAL = 30.0  # seconds between a tier's progress lines: a night runs for hours
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
    faults: FaultPlan | None = None  # crash tests only: where the run kills itself; None: the graph has no checkpoints
    # (source, uri) of inputs with rows in the date's tables that this run did not see (deleted or moved
    # inputs, an unmounted inbox): their rows are kept as they are (the flow leaves this empty to prune).
    unseen: frozenset[tuple[str, str]] = frozenset()


def _read_counted(item: tuple[bytes, str], config: Config, inbox: str | None,
                  done: frozenset[tuple[str, str]]) -> Iterator[Document | Rejected | AlreadyDone]:
    """The Ingest step: read_and_ingest, each record counted (per source too), and the time it took."""
    path, source = item
    started = time.perf_counter()
    records = read_and_ingest((os.fsdecode(path), source), config, inbox, done)
    Metrics.counter(NAMESPACE, "ms_ingest").inc(round(1000 * (time.perf_counter() - started)))
    for record in records:
        Metrics.counter(NAMESPACE, "inputs").inc()
        Metrics.counter(NAMESPACE, f"inputs_{source}").inc()
        yield record


class TierModelHandler(ModelHandler[Document, Document, TierOnDemand]):
    """One tier behind RunInference: the model is loaded once per worker, when the tier's first batch
    arrives, and each batch is answered by tiers.answer_batch. It does not route: routing is the graph's
    next step."""

    def __init__(self, config: Config, tier: Tier):
        self._config = config
        self._tier = tier
        batch = tier_config(config, tier).parallel_sequences
        # A batch is `parallel_sequences` documents: an HTTP tier sends them concurrently; the in-process
        # runtime evaluates each document as its own sequence, so the batch never changes an answer.
        # Fixed size (Beam would otherwise start at 1 and grow): only a bundle's last batch is smaller.
        super().__init__(min_batch_size=batch, max_batch_size=batch)

    def load_model(self) -> TierOnDemand:
        # Beam sets every handler up at the start, whether or not documents reach it: the model itself
        # loads on the first batch (an escalation-free night never loads the large tier).
        return TierOnDemand(self._config, self._tier)

    def run_inference(self, batch: Sequence[Document], model: TierOnDemand,
                      inference_args: dict | None = None) -> Iterable[Document]:
        # Documents this worker's handler answered, with the rate. The night's total is not known here
        # (files are read as the tier runs), so no ETA. Made on the worker, not pickled with the graph.
        line = getattr(self, "_progress", None)
        if line is None:
            line = self._progress = Progress(f"{self._tier} tier", None, interval=NIGHT_INTERVAL)
        started = time.perf_counter()
        with model.use() as loaded:  # the first batch loads the model
            answering = time.perf_counter()
            answered = answer_batch(batch, loaded, self._config, self._tier)
        # Where a night's time goes, per tier (bench/cold.py prints it): loading, and answering (the first batch
        # also computes any content-free calibration values). Summed over workers on dask.
        Metrics.counter(NAMESPACE, f"ms_{self._tier}_load").inc(round(1000 * (answering - started)))
        Metrics.counter(NAMESPACE, f"ms_{self._tier}_answer").inc(round(1000 * (time.perf_counter() - answering)))
        line.advance(len(batch))
        for doc in answered:  # the tier's token counts: the prompts' tokens, and those actually computed
            usage = doc.usage.get(self._tier)
            if usage:
                Metrics.counter(NAMESPACE, f"tokens_{self._tier}_prompt").inc(usage.prompt_tokens)
                Metrics.counter(NAMESPACE, f"tokens_{self._tier}_computed").inc(usage.computed_tokens)
        return answered

    def get_metrics_namespace(self) -> str:
        return f"sluicegate_{self._tier}"

    def share_model_across_processes(self) -> bool:
        return False


def _fault_point(pcoll: beam.PCollection, spec: RunSpec, stage: str, label: str) -> beam.PCollection:
    """A kill checkpoint for the crash tests; in the graph only when the spec carries a fault plan."""
    if spec.faults is None:
        return pcoll
    return pcoll | label >> beam.Map(pass_checkpoint, spec.faults, stage)


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

    def process(self, record: Document | Rejected) -> Iterator:
        if isinstance(record, Rejected):
            yield beam.pvalue.TaggedOutput("errors", record)
        elif record.error:
            yield beam.pvalue.TaggedOutput("errors", sinks.document_error(record))
        else:
            yield record


def _keyed_rows(spec: RunSpec) -> beam.PTransform:
    """Final documents -> ((table, source), row) for results, labels, fields and manifest."""

    def rows(doc: Document) -> Iterable[tuple[tuple[str, str], dict]]:
        Metrics.counter(NAMESPACE, f"decided_{overall_tier(doc.decided_by)}").inc()
        yield ("results", doc.source), sinks.result_row(doc, spec.config, spec.run_id, spec.config_hash)
        for row in sinks.label_rows(doc, spec.config, spec.run_id):
            yield ("labels", doc.source), row
        for row in sinks.field_rows(doc, spec.config, spec.run_id):
            yield ("fields", doc.source), row
        yield ("manifest", doc.source), sinks.manifest_row(doc, spec.version_key, spec.run_id)

    return beam.FlatMap(rows)


class _StagePartition(beam.DoFn):
    """Writes a partition's new content to a hidden temporary file; _commit renames it into place."""

    def __init__(self, spec: RunSpec):
        self._spec = spec

    def process(self, element: tuple[tuple[str, str], Iterable[dict | _Keep | None]]
                ) -> Iterator[tuple[str, str]]:
        (table, source), items = element
        rows, keep = [], set()
        for item in items:
            if isinstance(item, _Keep):
                keep.add(item.uri)
            elif item is not None:
                rows.append(item)
        s = self._spec
        tmp, final, n = sinks.stage_table_partition(s.out_root, table, s.run_date, source, rows, s.config, s.shard,
                                                    keep)
        Metrics.counter(NAMESPACE, f"rows_{table}").inc(n)
        yield str(tmp), str(final)


def _commit(run_id: str, spec: RunSpec, staged: list[tuple[str, str]]) -> int:
    """All the shard's partitions, renamed into place together (see sinks.commit); manifest last. The
    journal is the shard's own: shards of one run commit independently, on different workers."""
    after_each = (lambda: checkpoint(spec.faults, "commit")) if spec.faults else None
    sinks.check_date_owner(spec.out_root, spec.run_date, run_id)
    return sinks.commit(spec.out_root, spec.run_date, f"{run_id}.{spec.shard}", staged, after_each)


def build_pipeline(p: beam.Pipeline, spec: RunSpec) -> beam.PCollection:
    config = spec.config
    records = (
        p
        # As bytes: a file name need not be UTF-8, and Beam's string coder would fail on it (the reader
        # turns such a name into one bad_file_name error).
        | "Inputs" >> beam.Create([(os.fsencode(uri), source) for uri, source in spec.inputs])
        | "Reshuffle" >> beam.Reshuffle()  # spread files over workers before the expensive parse
        | "Ingest" >> beam.FlatMap(_read_counted, config, spec.inbox or None, spec.done)
    )
    records = _fault_point(records, spec, "ingest", "FaultAfterIngest")
    todo = records | "SkipDone" >> beam.ParDo(_SkipDone(spec.done)).with_outputs("skipped", main="todo")
    ingested = todo.todo | "SplitIngest" >> beam.ParDo(_Split()).with_outputs("errors", main="docs")

    # Small tier, then routing: each item is decided here or escalated; a document the tier failed on is an error.
    small = ingested.docs | "SmallTier" >> RunInference(TierModelHandler(config, "small"))
    small = _fault_point(small, spec, "inference", "FaultAfterSmallTier")
    routed_small = (small
                    | "RouteSmall" >> beam.Map(route_after, config, "small")
                    | "SplitSmall" >> beam.ParDo(_Split()).with_outputs("errors", main="docs"))
    kept, escalated = routed_small.docs | "KeptOrEscalated" >> beam.Partition(lambda d, _: int(needs_large(d)), 2)
    # A stage boundary: the small tier answers the whole night before the large tier starts, so the process
    # holds one model at a time (loading the large tier releases the small one: tiers.TierOnDemand).
    escalated = escalated | "AfterSmallTier" >> beam.Reshuffle()

    # Large tier (escalated items only), then routing: what it is still unsure of goes to review.
    large = escalated | "LargeTier" >> RunInference(TierModelHandler(config, "large"))
    routed_large = large | "RouteLarge" >> beam.Map(route_after, config, "large")
    final_docs = (kept, routed_large) | "AllDecided" >> beam.Flatten()

    doc_rows = final_docs | "Rows" >> _keyed_rows(spec)
    error_rows = (
        (ingested.errors, routed_small.errors)
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> beam.FlatMap(lambda r: [(("errors", r.source), sinks.error_row(r, spec.run_id)),
                                                 (("manifest", r.source), sinks.manifest_row(r, spec.version_key,
                                                                                             spec.run_id))])
    )
    kept_rows = todo.skipped | "KeepSkipped" >> beam.FlatMap(
        lambda r: [((table, r.source), _Keep(r.uri)) for table in RESULT_TABLES])
    unseen_rows = p | "KeepUnseen" >> beam.Create(
        [((table, source), _Keep(uri)) for source, uri in sorted(spec.unseen) for table in RESULT_TABLES])
    # Every partition this run owns is written, even empty, so a rerun replaces what an earlier run wrote.
    owned = p | "OwnedPartitions" >> beam.Create(
        [((table, source), None) for table in RESULT_TABLES for source in spec.sources])
    partitions = (
        (doc_rows, error_rows, kept_rows, unseen_rows, owned)
        | "AllRows" >> beam.Flatten()
        | "ByPartition" >> beam.GroupByKey()
    )
    # Every partition is staged (a hidden temp file), then all are renamed in one commit step, manifest
    # last: the manifest says "done, skip next time", and a run killed mid-commit is finished by the next.
    staged = partitions | "Stage" >> beam.ParDo(_StagePartition(spec))
    staged = _fault_point(staged, spec, "write", "FaultAfterStage")
    return (p | "CommitRun" >> beam.Create([spec.run_id])
            | "Commit" >> beam.Map(_commit, spec, beam.pvalue.AsList(staged)))


def run_pipeline(spec: RunSpec, runner: str = "FnApiRunner", pipeline_args: list[str] | None = None) -> dict[str, int]:
    """Runs the graph and returns its counters: inputs, rows per table, decisions and tokens per tier, and
    milliseconds per stage (ms_ingest, ms_<tier>_load, ms_<tier>_answer)."""
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
