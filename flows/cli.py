"""`sluicegate` command line: `sluicegate run --date YYYY-MM-DD [--inbox DIR] [--out DIR] [--config FILE]`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from flows.settings import apply_defaults, progress_to_stderr


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluicegate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the nightly job for one date, embedded (no Prefect server needed)")
    run.add_argument("--date", type=_parse_date, help="run date, YYYY-MM-DD (default: yesterday, in [schedule]'s "
                     "time zone)")
    run.add_argument("--inbox", help="input root: <inbox>/<source>/<date>/** (default: from the config)")
    run.add_argument("--out", help="output root for the Parquet tables (default: from the config)")
    run.add_argument("--config", help="TOML configuration (default: ./sluicegate.toml, else the bundled one)")
    run.add_argument("--sources", nargs="+", choices=["tickets", "pdf"], help="default: all configured")
    run.add_argument("--reprocess", action="store_true", help="recompute inputs already done with this version")
    run.add_argument("--prune-missing", action="store_true",
                     help="drop the rows of inputs no longer in the inbox (default: keep them, and count them)")
    run.add_argument("--engine", choices=["local", "dask"], help="where the shards run (default: [engine] kind)")
    run.add_argument("--address", help="dask scheduler, tcp://host:8786 (implies --engine dask; default: [engine] "
                     "address, empty: a LocalCluster on this machine)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    # Crash tests only (tests/robustness/test_crash.py): '<stage>[:<n>]', the run kills itself there. Hidden.
    run.add_argument("--test-kill-at", metavar="STAGE[:N]", help=argparse.SUPPRESS)

    fill = sub.add_parser("backfill", help="run the nightly job for every date of a range, embedded")
    fill.add_argument("--start", type=_parse_date, required=True)
    fill.add_argument("--end", type=_parse_date, required=True)
    fill.add_argument("--sources", nargs="+", choices=["tickets", "pdf"])
    fill.add_argument("--reprocess", action="store_true")
    fill.add_argument("--prune-missing", action="store_true", help="as for run")
    fill.add_argument("--inbox")
    fill.add_argument("--out")
    fill.add_argument("--config")
    fill.add_argument("--engine", choices=["local", "dask"], help="as for run")
    fill.add_argument("--address", help="as for run")

    rv = sub.add_parser("review", help="export the items a night left to review as a CSV to fill in")
    rv.add_argument("--date", type=_parse_date, required=True, help="run date, YYYY-MM-DD")
    rv.add_argument("--end", type=_parse_date, help="last run date of a range (default: --date)")
    rv.add_argument("--out", required=True, help="the CSV to write")
    rv.add_argument("--tables", help="output root of the Parquet tables (default: from the config)")
    rv.add_argument("--config", help="TOML configuration (default as for run)")

    ev = sub.add_parser("evaluate", help="score small, large and the cascade on a labelled set; report and plots")
    given = ev.add_mutually_exclusive_group(required=True)
    given.add_argument("--data", help="labelled CSV/JSONL, or an invoice2data folder")
    given.add_argument("--outcomes", help="an earlier evaluation's outcomes.parquet: re-scored, no model is run")
    ev.add_argument("--format", help="adapter: sluicegate, bitext, airline, vader, invoice2data (default: by columns)")
    ev.add_argument("--out", default="eval", help="report folder (default ./eval)")
    ev.add_argument("--limit", type=int, help="a sample of this many examples, with the data's class proportions")
    ev.add_argument("--config", help="TOML configuration (default as for run)")
    ev.add_argument("--calibrate", action="store_true",
                    help="store the fitted calibration and thresholds with the model version (next runs use them)")
    target = ev.add_mutually_exclusive_group()
    target.add_argument("--target-escalation", type=float, metavar="R",
                        help="escalation budget per task, 0-1 (default 0.15): the best cascade within it")
    target.add_argument("--target-quality-gap", type=float, metavar="P",
                        help="thresholds for the lowest escalation within P points of the better single tier")
    ev.add_argument("--json", action="store_true", help="print the summary as JSON")

    ft = sub.add_parser("finetune", help="train a LoRA adapter (and tier 0) on labelled examples; promote if better")
    ft.add_argument("--train", action="append", required=True, help="labelled examples (CSV/JSONL; repeatable)")
    ft.add_argument("--eval", help="held-out examples (default: a 10%% split of --train)")
    ft.add_argument("--format", help="adapter for every file (default: picked from the columns)")
    ft.add_argument("--limit", type=int, help="examples per training file (stratified sample)")
    ft.add_argument("--eval-limit", type=int, default=150,
                    help="held-out examples evaluated, of the new data and of the promoted version's (default 150; "
                         "of the promoted version's, at least 80 per task)")
    ft.add_argument("--epochs", type=float, default=1.0)
    ft.add_argument("--distill-start", type=_parse_date, help="also learn from the large tier's decisions ...")
    ft.add_argument("--distill-end", type=_parse_date, help="... of these run dates (default: the start date)")
    ft.add_argument("--distill-out", help="output root to distill from (default: the configured one)")
    ft.add_argument("--corrections", help="CSV of doc_id + corrected labels / field.<name> values")
    ft.add_argument("--force", action="store_true", help="promote even if not better than the promoted version")
    ft.add_argument("--no-linear", action="store_true", help="do not fit tier 0 (TF-IDF linear models)")
    ft.add_argument("--from-base", action="store_true",
                    help="train from the base model, not from the promoted version's adapter")
    ft.add_argument("--config")
    ft.add_argument("--json", action="store_true")

    srv = sub.add_parser("serve", help="start a local Prefect server (UI) and serve the deployments")
    srv.add_argument("--config", help="configuration the deployments use (default as for run)")
    srv.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1 (default 4200)")
    srv.add_argument("--api-url", help="serve to an existing Prefect server instead of starting one")
    srv.add_argument("--home", default=str(Path.home() / ".sluicegate" / "prefect"),
                     help="the local server's database and settings folder")
    dep = sub.add_parser("deploy", help="register the deployments with a Prefect server for a process work pool")
    dep.add_argument("--pool", required=True, help="process work pool (created if missing)")
    dep.add_argument("--config", help="configuration the deployments use (default as for run)")
    dep.add_argument("--api-url", help="the Prefect server (default: PREFECT_API_URL)")
    args = parser.parse_args(argv)

    apply_defaults()
    # Prefect is imported only after the environment defaults are set.
    from flows.nightly import resolve_config
    from schemas.config import local_output_root

    try:
        # A bad configuration fails here, before any flow run starts. Fine-tuning and calibrating create a
        # missing model registry; everything else needs it to exist.
        creates_registry = args.command == "finetune" or (args.command == "evaluate" and args.calibrate)
        resolve_config(args.config, registry_must_exist=not creates_registry)
        if args.command in ("run", "backfill") and args.out:
            local_output_root(args.out)  # as is an object-store --out (the flow checks it too)
        if args.command in ("run", "backfill"):
            progress_to_stderr()  # per-stage lines; runs under `serve` log to Prefect only
        if args.command == "serve":
            from flows.deployments import serve_deployments

            return serve_deployments(args.config, args.api_url, args.port, Path(args.home))
        if args.command == "deploy":
            import os

            from flows.deployments import deploy_to_pool

            if args.api_url:
                os.environ["PREFECT_API_URL"] = args.api_url
            if not os.environ.get("PREFECT_API_URL"):
                raise ValueError("no Prefect server: give --api-url or set PREFECT_API_URL")
            names = deploy_to_pool(args.config, args.pool)
            print(f"deployed to work pool {args.pool!r}: {', '.join(names)}\nstart a worker in {Path.cwd()}: "
                  f"uv run prefect worker start --pool {args.pool}")
            return 0
        if args.command == "finetune":
            from processors.finetune import require_training_stack

            require_training_stack()  # an optional extra: say what to install before a flow run starts
            from flows.finetune import finetune

            result = finetune(train=args.train, eval=args.eval, format=args.format, limit=args.limit,
                              eval_limit=args.eval_limit, epochs=args.epochs, distill_out=args.distill_out,
                              distill_start=args.distill_start, distill_end=args.distill_end,
                              corrections=args.corrections, force=args.force, linear=not args.no_linear,
                              from_base=args.from_base, config_path=args.config)
            print(json.dumps(result, indent=2, default=str) if args.json else
                  f"version {result['version']}: {'promoted' if result['promoted'] else 'not promoted'}"
                  f" ({result['why']})\n  folder {result['folder']}")
            return 0
        if args.command == "review":
            from datetime import timedelta

            from processors.review import review_rows, write_review

            config, _ = resolve_config(args.config)
            end = args.end or args.date
            dates = [(args.date + timedelta(days=i)).isoformat() for i in range((end - args.date).days + 1)]
            rows = review_rows(config, args.tables or config.output.root, dates)
            path = write_review(rows, args.out)
            print(f"{len(rows)} items to review ({len({r['doc_id'] for r in rows})} documents) in {path}: fill in "
                  "the 'correct' column, then: sluicegate finetune --train ... --corrections " + str(path))
            return 0
        if args.command == "evaluate":
            from flows.evaluate import evaluate, print_summary

            result = evaluate(data=args.data or "", outcomes=args.outcomes or "", format=args.format, out=args.out,
                              limit=args.limit,
                              config_path=args.config, calibrate=args.calibrate,
                              target_escalation=args.target_escalation,
                              target_quality_gap_points=args.target_quality_gap)
            print(json.dumps(result, indent=2, default=str)) if args.json else print_summary(result)
            return 0
        if args.command == "backfill":
            from flows.backfill import backfill

            summary = backfill(start=args.start, end=args.end, sources=args.sources, reprocess=args.reprocess,
                               inbox=args.inbox, out=args.out, config_path=args.config,
                               prune_missing=args.prune_missing, engine=args.engine, address=args.address)
            for o in summary["outcomes"]:
                print(f"{o['date']}: {o['state']}  inputs {o['inputs']} = results {o['results']} + errors "
                      f"{o['errors']} (skipped {o['skipped']}, not in the inbox: kept {o['kept_unseen']}, "
                      f"pruned {o['pruned']})")
            return 0
        from flows.nightly import nightly

        # From a terminal the operator sees a failure at once: no retry (deployments retry once).
        summary = nightly.with_options(retries=0)(
            run_date=args.date, sources=args.sources, reprocess=args.reprocess, inbox=args.inbox, out=args.out,
            config_path=args.config, prune_missing=args.prune_missing, engine=args.engine, address=args.address,
            test_kill_at=args.test_kill_at)
    except Exception as e:  # noqa: BLE001 - report, do not dump a traceback on the operator
        print(f"sluicegate: {args.command} failed: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0


def _print_summary(s: dict) -> None:
    print(f"\nsluicegate run {s['run_id']}  ({s['seconds']} s)")
    unseen = f" + {s['n_unseen_kept']} not in the inbox now" if s.get("n_unseen_kept") else ""
    print(f"  inputs {s['n_inputs']}{unseen} = results {s['n_results']} + errors {s['n_errors']}"
          f"  [{'ok' if s['invariant_ok'] else 'INVARIANT FAILED'}]"
          + (f"  ({s['n_skipped']} already done, kept)" if s.get("n_skipped") else ""))
    if s.get("n_unseen_kept"):
        print(f"  {s['n_unseen_kept']} inputs with rows for this date are no longer in the inbox: their rows were"
              " kept (--prune-missing drops them)")
    if s.get("n_pruned"):
        print(f"  {s['n_pruned']} inputs no longer in the inbox: their rows were dropped (--prune-missing)")
    print(f"  decided by: {', '.join(f'{k} {v}' for k, v in sorted(s['decided_by'].items()))}")
    print(f"  escalation rate: {', '.join(f'{k} {v:.0%}' for k, v in s['escalation_rate'].items())}")
    if s["errors_by_reason"]:
        print(f"  errors: {', '.join(f'{k} {v}' for k, v in sorted(s['errors_by_reason'].items()))}")
    if s.get("model_version"):
        print(f"  model version {s['model_version']}" + "".join(f"\n    note: {n}" for n in s["model_notes"]))
    if s.get("degraded"):
        print(f"  DEGRADED ([alerts] limits): {'; '.join(s['degraded'])}")
    if s["docs_per_second_small"]:
        print(f"  small tier: {s['docs_per_second_small']:.1f} documents/s")
    print(f"  tables under {s['out']}")


if __name__ == "__main__":
    sys.exit(main())
