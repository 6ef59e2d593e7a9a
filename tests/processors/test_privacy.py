import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.models.base import Completion, TokenLogprob
from processors.privacy import find_pii, iban_ok, luhn_ok, mask, scrub_secret, unmask, unmask_completion
from processors.tasks import extract
from schemas.config import FieldSpec, TierModel
from schemas.records import Document

PII = {
    "email": "jane.roe+billing@example.co.uk",
    "phone_intl": "+49 30 12345678",
    "phone_us": "(555) 123-4567",
    "iban": "DE89 3704 0044 0532 0130 00",
    "iban_compact": "GB82WEST12345698765432",
    "card": "4111 1111 1111 1111",
    "amex": "378282246310005",
}
NOT_PII = ["ORD-2024-118823", "2024-11-03", "03.11.2024", "1 234 567.89", "INV-00042", "98109-5210",
           "29.995.0024", "4111 1111 1111 1112",  # Luhn fails
           "DE88 3704 0044 0532 0130 00",  # wrong IBAN check digits
           "113542617735902"]  # Luhn-valid by chance, but no card network starts with 1


@pytest.mark.parametrize("kind, value", PII.items())
def test_each_kind_is_masked_and_restored(kind, value):
    text = f"Hello, my {kind} is {value}, thanks."
    masked, masks = mask(text)
    assert value not in masked and list(masks.values()) == [value]
    [placeholder] = masks
    assert placeholder.startswith("[" + {"email": "EMAIL", "iban": "IBAN", "iban_compact": "IBAN", "card": "CARD",
                                         "amex": "CARD"}.get(kind, "PHONE") + "_")
    assert unmask(masked, masks) == text


@pytest.mark.parametrize("value", NOT_PII)
def test_ids_dates_amounts_and_failed_checksums_are_left_alone(value):
    assert mask(f"Reference {value} here") == (f"Reference {value} here", {})


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE89 3704 0044 0532 0130 01")


def test_same_value_same_placeholder_and_literal_placeholders_are_not_reused():
    text = "a@b.co wrote; reply to a@b.co or c@d.org. The form said [EMAIL_1]."
    masked, masks = mask(text)
    assert masked.count("[EMAIL_2]") == 2 and "[EMAIL_3]" in masked and masked.endswith("said [EMAIL_1].")
    assert masks == {"[EMAIL_2]": "a@b.co", "[EMAIL_3]": "c@d.org"}
    assert unmask(masked, masks) == text


def test_iban_followed_by_a_bic_is_cut_at_the_iban():
    masked, masks = mask("IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX")
    assert masked == "IBAN [IBAN_1] BIC COBADEFFXXX" and masks["[IBAN_1]"] == "DE89 3704 0044 0532 0130 00"


def _tokens(pieces: list[str], p: float = 0.9) -> list[TokenLogprob]:
    return [TokenLogprob(t, math.log(p), {t: math.log(p)}) for t in pieces]


def test_masked_field_value_comes_back_real_valid_and_with_its_span():
    doc = Document(doc_id="d", source="tickets", uri="u", text="Write to jane.roe@example.com today.")
    masked, masks = mask(doc.text)
    assert masked == "Write to [EMAIL_1] today."
    # What a model writes for the email field: the placeholder, token by token.
    completion = Completion(' "[EMAIL_1]",', _tokens([' "', "[", "EMAIL", "_", "1", "]", '",']), 10, 7)
    restored = unmask_completion(completion, masks)
    assert restored.text == ' "jane.roe@example.com",'
    assert "".join(t.token for t in restored.tokens) == restored.text
    pred = extract.parse(restored, FieldSpec(name="email", type="email"), doc, "large")
    assert pred.valid and pred.value == "jane.roe@example.com" and pred.normalized == "jane.roe@example.com"
    assert doc.text[pred.span_start:pred.span_end] == "jane.roe@example.com"
    assert pred.confidence == pytest.approx(0.9)  # the placeholder's tokens still count


def test_unknown_placeholder_stays_and_fails_the_source_check():
    doc = Document(doc_id="d", source="tickets", uri="u", text="Write to jane.roe@example.com today.")
    _, masks = mask(doc.text)
    completion = Completion(json.dumps("[EMAIL_7]"), _tokens(['"', "[EMAIL_7]", '"']), 5, 3)
    pred = extract.parse(unmask_completion(completion, masks), FieldSpec(name="email", type="email"), doc, "large")
    assert not pred.valid and "not_in_source" in pred.problems


def test_mask_pii_defaults_on_for_http_only():
    assert TierModel(model="m", runtime="http", endpoint="http://127.0.0.1:1").mask_pii
    assert not TierModel(model="m").mask_pii
    assert not TierModel(model="m", runtime="http", endpoint="http://127.0.0.1:1", mask_pii=False).mask_pii


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab@.+-() 0123456789[]_EMAILPHONE\n#/,DEGB")), max_size=80))
def test_masking_never_raises_and_always_round_trips(text):
    masked, masks = mask(text)
    assert unmask(masked, masks) == text
    spans = find_pii(text)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


SECRET = "sk-live-4f9a2b7c1d8e6f30"


@pytest.mark.parametrize("secret", [SECRET, SECRET + "\n", " " + SECRET + "\r\n"])
@pytest.mark.parametrize("render", [
    lambda k: f"Illegal header value {('Bearer ' + k).encode()!r}",  # h11 / httpx, bytes repr
    lambda k: f"bad key {k!r} given",  # Python repr
    lambda k: json.dumps({"error": f"invalid key {k}"}),  # a JSON body echoing it
    lambda k: f"GET /v1/models?key={k.strip()}%0A",  # URL-quoted
    lambda k: f"key {k} and again {k.strip()}",  # raw and stripped
    lambda k: ("invalid key " + k)[:20],  # cut off inside the key: its first 8 characters remain
], ids=["bytes_repr", "repr", "json", "url", "raw", "cut"])
def test_scrub_secret_removes_every_form(secret, render):
    message = render(secret)
    scrubbed = scrub_secret(message, secret)
    assert "***" in scrubbed
    assert not [SECRET[i:i + 8] for i in range(len(SECRET) - 7) if SECRET[i:i + 8] in scrubbed], scrubbed


def test_scrub_secret_keeps_the_rest_of_the_message():
    assert scrub_secret(f"HTTP 401: key {SECRET} rejected", SECRET) == "HTTP 401: key *** rejected"
    assert scrub_secret("HTTP 401: key sk-live rejected", SECRET) == "HTTP 401: key sk-live rejected"  # < 8 chars
    assert scrub_secret("no secret here", "") == "no secret here"
    assert scrub_secret("", SECRET) == ""
    inner = SECRET[:10] + "\n" + SECRET[10:]  # a line break inside: both halves, in any rendering
    assert scrub_secret(f"value {inner.encode()!r}", inner) == "value b'***'"
    assert SECRET[10:] not in scrub_secret(f"first {SECRET[:10]}, then {SECRET[10:]}", inner)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(min_size=1, max_size=30), st.text(max_size=60))
def test_scrub_secret_never_raises_and_removes_the_secret(before, secret, after):
    scrubbed = scrub_secret(before + secret + after, secret)
    if "*" not in secret:  # a secret made of the placeholder's stars could be rebuilt from it
        assert secret not in scrubbed and (len(secret.strip()) < 8 or secret.strip() not in scrubbed)


def test_scrub_secret_that_repeats_its_own_start_is_not_half_redacted():
    secret = "aaaaaaaaXYZ-SECRET"
    assert scrub_secret("key a" + secret + " end", secret) == "key *** end"
