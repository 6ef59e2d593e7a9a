"""Bitext tickets whose field values no training row holds, to judge ticket fields on reading, not memory.

    uv run python bench/fresh_ticket_values.py --data ../shared/data/tickets/bitext/validation.csv \
        --exclude ../shared/data/tickets/bitext/train.csv --out fresh.csv [--absent 80] [--seed 0]

Why: bitext's entity values are a pool of 19 (five order ids, four invoice ids, five amounts, five names), and
every value of the validation split occurs in the training split. A model fine-tuned on bitext can score 1.0 on
its fields by remembering the pool. Here each annotated value of a ticket field (order_id, invoice_id,
refund_amount, person_name) is replaced, in the text and in the label, by a fresh value of the same shape: as
many digits (leading zeros kept), the same `#` prefix, an amount of as many digits, a name of the same form
("Mr. Jones" -> a title and a surname; "Anna Freeman" -> a first name and a surname), none of which occurs in
`--exclude`. The ticket's words, intent and category stay as they were, so the same rows can be judged with their
original values and with fresh ones. The output is a bitext CSV (`sluicegate evaluate --data fresh.csv`).

Rows annotated with another entity (city, country, account type: not ticket fields here) and, up to `--absent`,
rows without an entity are kept unchanged: they measure whether the model invents values where there are none.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
from pathlib import Path

FIELDS = ("order_id", "invoice_id", "refund_amount", "person_name")
TITLES = ("Mr.", "Ms.", "Mrs.", "Dr.")
# Names no bitext row holds (checked against --exclude at run time as well).
FIRST_NAMES = ["Amara", "Bjorn", "Chiara", "Dmitri", "Esme", "Farid", "Greta", "Hiroshi", "Ines", "Jonas",
               "Keziah", "Lorenzo", "Mei", "Nikolai", "Oona", "Pablo", "Quentin", "Rosa", "Sanjay", "Talia"]
SURNAMES = ["Abernathy", "Castellano", "Dubois", "Eriksen", "Fitzgerald", "Gallagher", "Haddad", "Ivanova",
            "Kowalczyk", "Lindqvist", "Moreau", "Nakamura", "Okonkwo", "Petrov", "Quinlan", "Romero",
            "Svensson", "Thornton", "Vasquez", "Whitfield"]


def fresh_value(field: str, value: str, rng: random.Random, taken: set[str]) -> str:
    """A value of `value`'s shape that is not in `taken` (the training pool and values already drawn)."""
    for _ in range(1000):
        candidate = _draw(field, value, rng)
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    raise RuntimeError(f"no fresh {field} of the shape of {value!r} left")


def _draw(field: str, value: str, rng: random.Random) -> str:
    if field == "person_name":
        title = value.split()[0]
        if title in TITLES:
            return f"{title} {rng.choice(SURNAMES)}"
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
    prefix = re.match(r"\D*", value).group()
    digits = value[len(prefix):]
    zeros = len(digits) - len(digits.lstrip("0"))
    rest = len(digits) - zeros
    if rest == 0:  # an id of zeros only: keep its length
        return prefix + "".join(rng.choice("0123456789") for _ in digits)
    body = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(rest - 1))
    return prefix + "0" * zeros + body


def pool(path: Path) -> set[str]:
    """Every entity value of a bitext CSV, and each word of the names (a fresh surname must not be one)."""
    values: set[str] = set()
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if value := (row.get("entity_value") or "").strip():
                values.add(value)
                values.update(value.split())
    return values


def refill(rows: list[dict], taken: set[str], seed: int = 0, absent: int | None = None) -> list[dict]:
    """Rows with each ticket field's value replaced by a fresh one (text, value and offsets), in input order."""
    rng = random.Random(seed)
    without = [i for i, row in enumerate(rows) if not (row.get("entity_type") or "").strip()]
    keep_without = set(without if absent is None else rng.sample(without, min(absent, len(without))))
    out = []
    for i, row in enumerate(rows):
        field = (row.get("entity_type") or "").strip()
        if not field:
            if i in keep_without:
                out.append(dict(row))
            continue
        if field not in FIELDS:
            out.append(dict(row))
            continue
        value, text = row["entity_value"], row["utterance"]
        if value not in text:  # an annotation that does not match its text is not judged with a new value
            continue
        new = fresh_value(field, value, rng, taken)
        # Every occurrence: a value written twice must not keep its remembered form in one place.
        text = text.replace(value, new)
        start = text.index(new)
        out.append({**row, "utterance": text, "entity_value": new,
                    "start_offset": str(start), "end_offset": str(start + len(new))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="bitext CSV to refill (the validation split)")
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="bitext CSV whose values must not recur (the training split); repeatable")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--absent", type=int, default=None,
                        help="rows without an entity to keep (default all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with args.data.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    taken = pool(args.data).union(*(pool(p) for p in args.exclude))
    out = refill(rows, taken, seed=args.seed, absent=args.absent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(out)
    refilled = sum(1 for row in out if row.get("entity_type") in FIELDS)
    print(f"{len(out)} rows ({refilled} with a fresh ticket-field value) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
