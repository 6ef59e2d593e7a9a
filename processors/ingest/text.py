"""Text hygiene for ingested documents: what the models and Parquet must never see."""

from __future__ import annotations

import re

# C0 controls except tab/newline/carriage return, DEL, C1 controls, and lone surrogates (from JSON escapes
# such as "\ud800" or damaged PDF text maps: they cannot be encoded as UTF-8, so Parquet would fail).
_UNWANTED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_text(text: str) -> str:
    return _UNWANTED.sub("", text)
