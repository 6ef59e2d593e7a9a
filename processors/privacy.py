"""PII masking for text that leaves the machine: emails, phone numbers, IBANs and card numbers.

`mask` replaces each such value with a placeholder (`[EMAIL_1]`, `[PHONE_1]`, `[IBAN_1]`, `[CARD_1]`;
the same value gets the same placeholder within one text) and returns the mapping back. Extracted
field values are restored with `unmask` / `unmask_completion` before they are parsed against the real
document text, so spans and the "occurs in the source" validator see the original values.
`scrub_secret` removes a credential (an API key) from a message in every form it may take there:
as is, stripped, escaped (Python, bytes or JSON repr, URL-quoted) or cut short.
Pure functions; never raise.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from os.path import commonprefix
from urllib.parse import quote

from processors.models.base import Completion, TokenLogprob

Masks = dict[str, str]  # placeholder -> original value

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Country code, check digits, then 11-30 letters or digits, optionally in groups; checked by mod 97.
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![\w])")
# 13-19 digits, optionally grouped by spaces or dashes; checked by Luhn.
_CARD = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){12,18}(?!\w)(?![.,/-]\d)")
# An international number (+..), or one written with separators or an area code in parentheses, or
# a bare run of digits right after a word like "phone". Not preceded by a letter, '-', '/', '.' or '#':
# order and invoice numbers such as ORD-2024-118823 are not phone numbers.
_PHONE = re.compile(r"(?<![\w+\-/.#])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ .-]\d{1,8}){1,5}"
                    r"(?![\w\-/])|(?<![\w+])\+\d{7,15}(?!\w)"
                    r"|(?i:\b(?:tel|phone|mobile|cell|fax)\b[.:]?[ ]*)(?P<v>\d{9,13})(?!\w)")
_DATE_LIKE = re.compile(r"^\d{1,4}[./ -]\d{1,2}[./ -]\d{1,4}$")
_AMOUNT_LIKE = re.compile(r"[.,]\d{2}$")
_ZIP4 = re.compile(r"^\d{5}-\d{4}$")
_DOTTED_PHONE = re.compile(r"^(?:\(\d{1,5}\)[ .]?)?\d{3}\.\d{3}\.\d{4}$|^\d{2}(?:\.\d{2}){4}$")
_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|IBAN|CARD)_\d+\]")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban(value: str) -> str | None:
    """The longest prefix (whole words) that passes mod 97: the regex may run into a following code."""
    words = value.split(" ")
    for n in range(len(words), 0, -1):
        candidate = " ".join(words[:n])
        if iban_ok(candidate):
            return candidate
    return None


def _card(value: str) -> str | None:
    """A Luhn-valid number of a card network's length and prefix (Amex, Visa, Mastercard, Discover ...)."""
    digits = re.sub(r"\D", "", value)
    issuer = digits[0] in "3456" or 22 <= int(digits[:2]) <= 27
    return value if 13 <= len(digits) <= 19 and issuer and luhn_ok(digits) else None


def _phone(value: str) -> str | None:
    digits = re.sub(r"\D", "", value)
    if value.startswith("+"):
        return value if 7 <= len(digits) <= 15 else None
    # Without a country code: 9-13 digits, not shaped like a date, an amount or a ZIP+4 code; dotted
    # only in the usual phone layouts (PDF text glues amounts into things like "29.995.0024").
    if _DOTTED_PHONE.match(value):
        return value
    if not 9 <= len(digits) <= 13 or "." in value or _DATE_LIKE.match(value) or _AMOUNT_LIKE.search(value) \
            or _ZIP4.match(value):
        return None
    return value


# In priority order: a span found by an earlier kind is not matched again by a later one.
_KINDS = (("IBAN", _IBAN, _iban), ("CARD", _CARD, _card), ("EMAIL", _EMAIL, lambda v: v), ("PHONE", _PHONE, _phone))


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, kind) spans, in text order."""
    spans: list[tuple[int, int, str]] = []
    for kind, pattern, accept in _KINDS:
        for m in pattern.finditer(text):
            group = "v" if "v" in pattern.groupindex and m.group("v") else 0
            start = m.start(group)
            value = accept(m.group(group).rstrip(" .-"))
            if not value:
                continue
            end = start + len(value)
            if any(s < end and start < e for s, e, _ in spans):
                continue
            spans.append((start, end, kind))
    return sorted(spans)


def mask(text: str) -> tuple[str, Masks]:
    """(masked text, placeholder -> original). The same value keeps one placeholder within a text."""
    spans = find_pii(text)
    if not spans:
        return text, {}
    masks: Masks = {}
    by_value: dict[tuple[str, str], str] = {}
    counters: dict[str, int] = {}
    out, pos = [], 0
    for start, end, kind in spans:
        value = text[start:end]
        placeholder = by_value.get((kind, value))
        if placeholder is None:
            while True:  # skip numbers whose placeholder the document itself contains
                counters[kind] = counters.get(kind, 0) + 1
                placeholder = f"[{kind}_{counters[kind]}]"
                if placeholder not in text:
                    break
            by_value[(kind, value)] = placeholder
            masks[placeholder] = value
        out.append(text[pos:start])
        out.append(placeholder)
        pos = end
    out.append(text[pos:])
    return "".join(out), masks


def unmask(text: str, masks: Masks) -> str:
    """Placeholders back to their original values (unknown placeholders stay as they are)."""
    if not masks or "[" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: masks.get(m.group(), m.group()), text)


def unmask_completion(completion: Completion, masks: Masks) -> Completion:
    """The completion with its placeholders restored, in the text and in the tokens that spell it.

    Field confidence is computed over the tokens that overlap the value's characters, so the tokens
    must still spell the text: the token holding a placeholder's first character takes the whole
    original value, the placeholder's other tokens keep their probabilities but no characters.
    """
    if not masks or not _PLACEHOLDER.search(completion.text):
        return completion
    text = completion.text
    replacements = {m.start(): (m.end(), masks[m.group()]) for m in _PLACEHOLDER.finditer(text) if m.group() in masks}
    if not replacements:
        return completion
    if sum(len(t.token) for t in completion.tokens) != len(text):  # tokens do not spell the text: text only
        return replace(completion, text=unmask(text, masks))
    tokens: list[TokenLogprob] = []
    pos, skip_until = 0, 0
    for token in completion.tokens:
        pieces = []
        for i in range(pos, pos + len(token.token)):
            if i in replacements:
                skip_until, original = replacements[i]
                pieces.append(original)
            elif i >= skip_until:
                pieces.append(text[i])
        tokens.append(replace(token, token="".join(pieces)))
        pos += len(token.token)
    return replace(completion, text="".join(t.token for t in tokens), tokens=tokens)


# -- secrets in messages ------------------------------------------------------------------------------

SECRET_PLACEHOLDER = "***"
_SECRET_MIN_PREFIX = 8  # a cut-off key's first 8+ characters are redacted too; fewer say little
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f-\x9f]+")


def _secret_forms(secret: str, min_prefix: int) -> list[str]:
    """How a secret can appear in a message: raw, stripped, escaped by repr / bytes repr / JSON,
    URL-quoted, and its printable runs (a control character inside it splits it in some renderings)."""
    forms: set[str] = set()
    for s in {secret, secret.strip()}:
        if not s:
            continue
        forms.add(s)
        forms.add(repr(s)[1:-1])  # Python escaping: 'sk-abc\n' as in an exception's repr
        forms.add(repr(s.encode("utf-8", "backslashreplace"))[2:-1])  # b'Bearer sk-abc\n' (h11, httpx)
        forms.add(json.dumps(s)[1:-1])  # a JSON body that echoes it
        forms.add(quote(s, safe="", errors="backslashreplace"))  # a URL that carries it
    forms.update(part for part in _UNPRINTABLE.split(secret) if len(part) >= min_prefix)
    return sorted(forms)


def _redact(message: str, forms: list[str], min_prefix: int) -> str:
    """Every occurrence of a form, or of a prefix of one at least min_prefix long (a message cut off
    inside the secret), replaced by the placeholder. Matches are found at every position, overlapping
    ones merged, so a secret that starts like itself (aaaa...) cannot slip past half-redacted."""
    needed = [min(min_prefix, len(f)) for f in forms]
    heads = sorted({f[:n] for f, n in zip(forms, needed, strict=True)}, key=len, reverse=True)
    starts = re.compile("(?=(?:" + "|".join(map(re.escape, heads)) + "))")
    spans: list[list[int]] = []
    for m in starts.finditer(message):
        start = m.start()
        matched = (len(commonprefix([message[start:start + len(f)], f])) for f in forms)
        end = start + max(k for k, n in zip(matched, needed, strict=True) if k >= n)
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    out: list[str] = []
    pos = 0
    for start, end in spans:
        out += [message[pos:start], SECRET_PLACEHOLDER]
        pos = end
    out.append(message[pos:])
    return "".join(out)


def scrub_secret(message: str, secret: str | None, min_prefix: int = _SECRET_MIN_PREFIX) -> str:
    """`message` without `secret` in any form it takes in exception texts, logs and echoed bodies.

    Scrub a message before cutting it to length: a cut can leave the start of a secret, which the
    prefix rule catches only from `min_prefix` characters on.
    """
    if not secret or not message:
        return message
    return _redact(message, _secret_forms(secret, min_prefix), min_prefix)
