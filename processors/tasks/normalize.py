"""Field normalizers and validators: pure functions, never raise. A failed parse is a problem, not an error."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%B %d, %Y",
                 "%b %d, %Y", "%b. %d, %Y", "%d %B %Y", "%d %b %Y", "%d-%b-%Y", "%d-%b-%y", "%b %d %Y",
                 "%B %d %Y", "%d %B, %Y", "%d/%m/%y", "%m/%d/%y", "%Y%m%d")
_CURRENCY_SYMBOLS = {"$": "USD", "us$": "USD", "€": "EUR", "eur": "EUR", "£": "GBP", "₹": "INR", "rs": "INR",
                     "rs.": "INR", "inr": "INR", "¥": "JPY", "chf": "CHF", "usd": "USD", "gbp": "GBP",
                     "dollar": "USD", "dollars": "USD", "us dollar": "USD", "us dollars": "USD", "euro": "EUR",
                     "euros": "EUR", "pound": "GBP", "pounds": "GBP", "rupee": "INR", "rupees": "INR",
                     "indian rupee": "INR", "indian rupees": "INR", "yen": "JPY"}
_ISO_CURRENCIES = {"USD", "EUR", "GBP", "INR", "JPY", "CHF", "CAD", "AUD", "CNY", "SEK", "NOK", "DKK",
                   "PLN", "CZK", "BRL", "MXN", "ZAR", "SGD", "HKD", "NZD", "AED", "SAR", "TRY", "KRW"}
_EMAIL = re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_/.#]{1,63}$")


# Month names of the invoices' other languages (German, French, Dutch, Spanish, Italian) -> English.
MONTH_NAMES = {
    "januar": "January", "janvier": "January", "januari": "January", "enero": "January", "gennaio": "January",
    "februar": "February", "février": "February", "fevrier": "February", "februari": "February",
    "febrero": "February", "febbraio": "February", "märz": "March", "maerz": "March", "mars": "March",
    "maart": "March", "marzo": "March", "avril": "April", "abril": "April", "aprile": "April", "mai": "May",
    "mei": "May", "mayo": "May", "maggio": "May", "juni": "June", "juin": "June", "junio": "June",
    "giugno": "June", "juli": "July", "juillet": "July", "julio": "July", "luglio": "July", "août": "August",
    "aout": "August", "augustus": "August", "agosto": "August", "septembre": "September",
    "septiembre": "September", "settembre": "September", "oktober": "October", "octobre": "October",
    "octubre": "October", "ottobre": "October", "novembre": "November", "noviembre": "November",
    "dezember": "December", "décembre": "December", "decembre": "December", "diciembre": "December",
    "dicembre": "December",
}
_MONTH_WORD = re.compile(r"[^\W\d_]+")


def normalize_date(value: str) -> str | None:
    text = _MONTH_WORD.sub(lambda m: MONTH_NAMES.get(m.group(0).lower(), m.group(0)), value)
    text = re.sub(r"(\d)\.(\s+[A-Za-z])", r"\1\2", text)  # German "7. Mai 2014"
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", " ".join(text.split()))
    text = re.sub(r"\s+([,.])", r"\1", text)  # PDF text often has "August 3 , 2014"
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def normalize_amount(value: str) -> str | None:
    text = re.sub(r"[^\d,.\-]", "", value)
    if not re.search(r"\d", text):
        return None
    if "," in text and "." in text:  # the later separator is the decimal one: 1.234,56 or 1,234.56
        text = text.replace(".", "").replace(",", ".") if text.rfind(",") > text.rfind(".") else text.replace(",", "")
    elif "," in text:  # 12,50 is a decimal comma; 1,234 is thousands
        text = text.replace(",", ".") if re.search(r",\d{1,2}$", text) else text.replace(",", "")
    try:
        return str(Decimal(text).quantize(Decimal("0.01")))
    except InvalidOperation:
        return None


def normalize_currency(value: str) -> str | None:
    text = value.strip()
    if text.upper() in _ISO_CURRENCIES:
        return text.upper()
    return _CURRENCY_SYMBOLS.get(" ".join(text.lower().split()))


def normalize(field_type: str, value: str) -> tuple[str | None, list[str]]:
    """(normalized value, problems) for a field type; problems name the validators that failed."""
    if field_type == "date":
        norm = normalize_date(value)
        return norm, ([] if norm else ["unparseable_date"])
    if field_type == "amount":
        norm = normalize_amount(value)
        return norm, ([] if norm else ["unparseable_amount"])
    if field_type == "currency":
        norm = normalize_currency(value)
        return norm, ([] if norm else ["unknown_currency"])
    if field_type == "email":
        norm = value.strip().lower()
        return norm, ([] if _EMAIL.match(norm) else ["not_an_email"])
    if field_type == "id":
        # "#" marks a number ("bill #37777"), it is not part of it; the value keeps its span as written.
        norm = value.strip().lstrip("#").strip()
        return norm, ([] if _ID.match(norm) else ["not_an_id"])
    if field_type == "name":
        # A person's name: 1-4 words, each starting with a capital letter (not a sentence).
        norm = " ".join(value.split())
        words = norm.split()
        ok = 1 <= len(words) <= 4 and all(w[0].isupper() and not any(c.isdigit() for c in w) for w in words)
        return norm, ([] if ok else ["not_a_name"])
    norm = " ".join(value.split())
    return norm, ([] if norm else ["empty"])


def currency_evidence(code: str) -> list[str]:
    """What can stand for an ISO currency in a document: the code itself and its symbols or names."""
    return [code, *sorted((k for k, v in _CURRENCY_SYMBOLS.items() if v == code), key=len, reverse=True)]


def find_span(text: str, value: str) -> tuple[int, int] | None:
    """Where the value occurs in the source text: exact, then case-insensitive, then ignoring whitespace."""
    if not value.strip():
        return None
    start = text.find(value)
    if start >= 0:
        return start, start + len(value)
    lowered = text.lower().find(value.lower())
    if lowered >= 0:
        return lowered, lowered + len(value)
    # Ignore whitespace between words and around punctuation: PDF text has "August 3 , 2014".
    parts = [re.escape(p) for p in re.findall(r"\w+|[^\w\s]", value)]
    if parts:
        match = re.search(r"\s*".join(parts), text, flags=re.IGNORECASE)
        if match:
            return match.start(), match.end()
    return None
