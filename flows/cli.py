"""`sluicegate` command line: `sluicegate run --date YYYY-MM-DD [--inbox DIR] [--out DIR] [--config FILE]`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

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
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)

    apply_defaults()
    from flows.nightly import nightly, resolve_config  # Prefect is imported after the environment defaults

    try:
        resolve_config(args.config)  # a bad configuration fails here, before any flow run starts
        summary = nightly(run_date=args.date, inbox=args.inbox, out=args.out, config_path=args.config)
    except Exception as e:  # noqa: BLE001 - report, do not dump a traceback on the operator
        print(f"sluicegate: run failed: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0


def _print_summary(s: dict) -> None:
    print(f"\nsluicegate run {s['run_id']}  ({s['seconds']} s)")
    print(f"  inputs {s['n_inputs']} = results {s['n_results']} + errors {s['n_errors']}"
          f"  [{'ok' if s['invariant_ok'] else 'INVARIANT FAILED'}]")
    print(f"  decided by: {', '.join(f'{k} {v}' for k, v in sorted(s['decided_by'].items()))}")
    print(f"  escalation rate: {', '.join(f'{k} {v:.0%}' for k, v in s['escalation_rate'].items())}")
    if s["errors_by_reason"]:
        print(f"  errors: {', '.join(f'{k} {v}' for k, v in sorted(s['errors_by_reason'].items()))}")
    if s["docs_per_second_small"]:
        print(f"  small tier: {s['docs_per_second_small']:.1f} documents/s")
    print(f"  tables under {s['out']}")


if __name__ == "__main__":
    sys.exit(main())
