"""The closed vocabularies of schemas/records.py: every reason and stage the code can write is in the one
list, and README's data dictionary lists exactly that list."""

import ast
import re
from pathlib import Path
from typing import get_args

from schemas.records import ERROR_REASONS, TIERS, ErrorReason, Stage, Tier

ROOT = Path(__file__).resolve().parents[2]
SNAKE = re.compile(r"^[a-z][a-z_]*$")


def _reasons_and_stages_in_code() -> tuple[set[str], set[str], int]:
    """String constants passed as a reason or stage to Rejected(...) or a module's _reject(...) helper."""
    reasons, stages, calls = set(), set(), 0
    for path in [*(ROOT / "processors").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id not in ("Rejected", "_reject"):
                continue
            calls += 1
            for kw in node.keywords:
                if isinstance(kw.value, ast.Constant) and kw.arg in ("reason", "stage"):
                    (reasons if kw.arg == "reason" else stages).add(kw.value.value)
            positional = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if node.func.id == "Rejected" and len(node.args) >= 4:  # Rejected(uri, source, stage, reason, ...)
                for i, bucket in ((2, stages), (3, reasons)):
                    if isinstance(node.args[i], ast.Constant):
                        bucket.add(node.args[i].value)
            elif node.func.id == "_reject":  # _reject(uri, [doc_id,] reason, message): the snake_case constant
                reasons.update(v for v in positional if SNAKE.match(v))
    return reasons, stages, calls


def test_every_reason_and_stage_the_code_writes_is_in_the_closed_lists():
    reasons, stages, calls = _reasons_and_stages_in_code()
    assert calls >= 30 and len(reasons) >= 20, "the scan must see the ingest and read code's rejections"
    assert reasons - set(ERROR_REASONS) == set(), "add new reasons to schemas.records.ERROR_REASONS"
    assert stages - set(get_args(Stage)) == set()
    assert set(get_args(ErrorReason)) == set(ERROR_REASONS)


def test_readme_lists_exactly_the_error_reasons_with_their_meaning():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Error reasons", 1)[1].split("\n#", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \|$", section, flags=re.M))
    assert rows == ERROR_REASONS


def test_tiers_are_ordered_lowest_first():
    assert TIERS == get_args(Tier) == ("linear", "small", "large", "review")
