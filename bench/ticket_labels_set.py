"""The ticket label set the shipped version's category and intent calibration, thresholds and tier 0 are fitted on.

    uv run python bench/fresh_ticket_values.py --data ../shared/data/tickets/bitext/validation.csv \
        --exclude ../shared/data/tickets/bitext/train.csv --out fresh.csv --absent 0
    uv run python bench/ticket_labels_set.py --fresh fresh.csv --out ticket_labels.csv
    uv run sluicegate evaluate --data ticket_labels.csv --calibrate --out <report folder>

Why: the 280 bitext validation tickets with fresh field values (fresh.csv) were too few to fit tier 0 on. On their
139 fit-half tickets, intent's tier 0 cost nothing at 0.6; on 450 validation tickets no evaluation had used, it
decided 150 at 0.6, wrong on 6 the small tier had right (right on 2 it had wrong). This set adds to the 280 every
validation row with no ticket-field entity (a row with one is in fresh.csv with fresh values): 530, those 450 and
80 the version held out for promotion. 810 tickets, labels only (category, intent; no fields, so the fields'
calibration stays as fitted on fresh values). No row is in bitext's training split (checked here).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", type=Path, required=True, help="bench/fresh_ticket_values.py's output")
    parser.add_argument("--validation", type=Path, default=SHARED / "tickets/bitext/validation.csv")
    parser.add_argument("--train", type=Path, default=SHARED / "tickets/bitext/train.csv")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from bench.fresh_ticket_values import FIELDS
    from processors.datasets import load_examples

    fresh = load_examples(args.fresh)
    taken = {e.example_id for e in fresh}
    unused = [e for e in load_examples(args.validation)
              if e.example_id not in taken and not any(e.fields.get(f) for f in FIELDS)]
    rows = fresh + unused
    trained = {e.text for e in load_examples(args.train)}
    if any(e.text in trained for e in rows):
        raise SystemExit("a row of the set is in the training split")
    with args.out.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["text", "source", "category", "intent"])
        for e in rows:
            out.writerow([e.text, "tickets", e.labels["category"], e.labels["intent"]])
    print(f"{len(fresh)} fresh-value tickets + {len(unused)} unused validation tickets -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
