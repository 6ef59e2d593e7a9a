"""`sluicegate` command line: `sluicegate run --date YYYY-MM-DD [--inbox DIR] [--out DIR] [--config FILE]`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from flows.settings import apply_defaults


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluicegate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the nightly job for one date, embedded (no Prefect server needed)")
    run.add_argument("--date", type=_parse_date, help="run date, YYYY-MM-DD (default: yesterday)")
    run.add_argument("--inbox", help="input root: <inbox>/<source>/<date>/** (default: from the config)")
    run.add_argument("--out", help="output root for the Parquet tables (default: from the config)")
    run.add_argument("--config", help="TOML configuration (default: ./sluicegate.toml, else the bundled one)")
    run.add_argument("--sources", nargs="+", choices=["tickets", "pdf"], help="default: all configured")
    run.add_argument("--reprocess", action="store_true", help="recompute inputs already done with this version")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")

    fill = sub.add_parser("backfill", help="run the nightly job for every date of a range, embedded")
    fill.add_argument("--start", type=_parse_date, required=True)
    fill.add_argument("--end", type=_parse_date, required=True)
    fill.add_argument("--sources", nargs="+", choices=["tickets", "pdf"])
    fill.add_argument("--reprocess", action="store_true")
    fill.add_argument("--inbox")
    fill.add_argument("--out")
    fill.add_argument("--config")

    srv = sub.add_parser("serve", help="start a local Prefect server (UI) and serve the deployments")
    srv.add_argument("--config", help="configuration the deployments use (default as for run)")
    srv.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1 (default 4200)")
    srv.add_argument("--api-url", help="serve to an existing Prefect server instead of starting one")
    srv.add_argument("--home", default=str(Path.home() / ".sluicegate" / "prefect"),
                     help="the local server's database and settings folder")
    args = parser.parse_args(argv)

    apply_defaults()
    # Prefect is imported only after the environment defaults are set.
    from flows.nightly import resolve_config

    try:
        resolve_config(args.config)  # a bad configuration fails here, before any flow run starts
        if args.command == "serve":
            from flows.deployments import serve_deployments

            return serve_deployments(args.config, args.api_url, args.port, Path(args.home))
        if args.command == "backfill":
            from flows.backfill import backfill

            summary = backfill(start=args.start, end=args.end, sources=args.sources, reprocess=args.reprocess,
                               inbox=args.inbox, out=args.out, config_path=args.config)
            for o in summary["outcomes"]:
                print(f"{o['date']}: {o['state']}  inputs {o['inputs']} = results {o['results']} + errors "
                      f"{o['errors']} (skipped {o['skipped']})")
            return 0
        from flows.nightly import nightly

        summary = nightly(run_date=args.date, sources=args.sources, reprocess=args.reprocess, inbox=args.inbox,
                          out=args.out, config_path=args.config)
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
    print(f"  inputs {s['n_inputs']} = results {s['n_results']} + errors {s['n_errors']}"
          f"  [{'ok' if s['invariant_ok'] else 'INVARIANT FAILED'}]"
          + (f"  ({s['n_skipped']} already done, kept)" if s.get("n_skipped") else ""))
    print(f"  decided by: {', '.join(f'{k} {v}' for k, v in sorted(s['decided_by'].items()))}")
    print(f"  escalation rate: {', '.join(f'{k} {v:.0%}' for k, v in s['escalation_rate'].items())}")
    if s["errors_by_reason"]:
        print(f"  errors: {', '.join(f'{k} {v}' for k, v in sorted(s['errors_by_reason'].items()))}")
    if s["docs_per_second_small"]:
        print(f"  small tier: {s['docs_per_second_small']:.1f} documents/s")
    print(f"  tables under {s['out']}")


if __name__ == "__main__":
    sys.exit(main())
