"""Candidate spans by field type: what a grounded field may take, found in the text, never invented."""

import pytest

from bench.make_invoices import LAYOUTS, write_invoices
from processors.datasets import load_examples
from processors.tasks.candidates import find_candidates, sum_it_is_part_of
from processors.tasks.extract import field_match
from processors.tasks.normalize import normalize
from tests.conftest import SHARED_DATA


def _texts(field_type: str, text: str) -> list[str]:
    return [c.text for c in find_candidates(field_type, text)]


def test_each_type_finds_its_spans_and_not_the_others():
    text = ("Order 113542617735902: I paid $1499 on 2014-08-03, not 1200 dollars. Bill #37777, "
            "ask Ms. Hawkings or anna@example.com. Invoice Date: August 3 , 2014")
    assert _texts("id", text) == ["113542617735902", "#37777", "37777"]  # "$1499", "1200 dollars": money
    assert _texts("amount", text) == ["$1499", "1499", "1200"]  # a 15-digit number is not an amount
    assert _texts("date", text) == ["2014-08-03", "August 3 , 2014"]
    assert _texts("currency", text) == ["$", "dollars"]
    assert _texts("email", text) == ["anna@example.com"]
    assert "Ms. Hawkings" in _texts("name", text)


def test_spans_are_where_the_text_is_and_numbers_inside_dates_are_not_ids_or_amounts():
    text = "Date: 15-10-2015Order Date: 20-10-2015 Total Rs 319.00"
    for c in find_candidates("date", text):
        assert text[c.start:c.end] == c.text
    assert _texts("date", text) == ["15-10-2015", "20-10-2015"]  # glued PDF text
    assert "2015" not in _texts("id", text) and "10" not in _texts("amount", text)
    assert _texts("amount", text) == ["Rs 319.00", "319.00"]


@pytest.mark.parametrize("text", ["rebating 299 dollars", "I have paid $160 for this product",
                                  "a refund of USD 1,200 please", "charged 450 EUR twice", "refund 300 bucks"])
def test_a_sum_of_money_is_an_amount_and_never_an_id(text):
    """One span cannot fill a refund amount and an order number: the meanings exclude each other."""
    assert _texts("id", text) == []
    assert len({normalize("amount", t)[0] for t in _texts("amount", text)}) == 1  # "$160" and "160": one sum


def test_numbers_beside_money_stay_ids():
    assert _texts("id", "order 55501 cost $20, invoice INV-2023-7 for 30 dollars") == ["55501", "INV-2023-7"]


@pytest.mark.parametrize("text", [
    "Order 12345 EUR 20", "Order\t12345\tEUR\t20.00", "Order ID Currency Amount\n12345 USD 99.00",
    "Order number: 12345\nEUR 20.00 was charged", "Payment 20 EUR\n12345 is the order", "Order 12345, EUR 20.00",
    "My order number is 12345. Euros were taken", "order 12345 USD-INV-0042", "12345 Bucks County",
    "12345 Dollar General"])
def test_a_number_that_only_may_be_money_stays_an_id(text):
    """A code between two numbers, across a line, or starting a reference: unclear, so the id is still offered
    (an id excluded by mistake would be a certain null that nobody reviews)."""
    assert "12345" in _texts("id", text)


def test_a_long_number_beside_a_currency_is_an_id():
    assert _texts("id", "order 113542617735902 USD") == ["113542617735902"]
    assert _texts("id", "USD 113542617735902") == ["113542617735902"]


def test_month_names_of_other_languages_are_dates():
    assert _texts("date", "Kundennr.30064443 7. Mai 2014 Rechnung") == ["7. Mai 2014"]
    assert _texts("date", "29 maart 2014Factuurdatum") == ["29 maart 2014"]
    assert "30064443" in _texts("id", "Kundennr.30064443 7. Mai 2014")


def test_a_date_that_ends_a_sentence_is_a_date_and_no_id():
    text = "Payable by 21.05.2025. Tel. 0301234567. Server 10.12.2024.5 is up"
    assert _texts("date", text) == ["21.05.2025"]  # not the address-like 10.12.2024.5
    assert "21.05.2025" not in _texts("id", text) and "21.05" not in _texts("amount", text)


def test_a_rate_is_no_amount_and_a_decimal_number_is_no_id():
    """A rate is a percentage of something, not a sum ("plus 7% tax" must not be a letter's total)."""
    text = "USD 1,970.40 (USD 1,800.00 plus 7% tax, 19  % VAT, 12.50 % off, 3 percent) is due in 10 days"
    assert _texts("amount", text) == ["USD 1,970.40", "1,970.40", "USD 1,800.00", "1,800.00", "10"]
    assert _texts("amount", "Total 1970.40, net 1656.64") == ["1970.40", "1656.64"]  # decimals, no grouping
    # no piece of a rate or a number is an id (a regex backing off from "100.00 %" would offer "100")
    for text in ("Rate 100.00 %", "1,234.50%", "Interest 125.5%", "INV-2022.05%", "12345%", "Betrag 1.234,56",
                 "Summe 123,45", "Total 1970.40", "Total 12345.67", "12,345", "Ref 0.2"):
        assert _texts("id", text) == [], text
    assert _texts("id", "orders 12345,67890 and A-12 and 1.2.3") == ["12345", "67890", "A-12", "1.2.3"]


@pytest.mark.parametrize("page", ["1", "Page 2", "- 3 -", "2 / 4", "Seite 2 von 3"])
def test_a_page_number_is_neither_an_amount_nor_an_id(page):
    """A letter with no sum in it offered its page number as its total; a number of its own line that ends a page
    (before the blank line that joins pages, or at the end) is a page number."""
    text = f"Dear Sir,\nthank you for your letter of 12 May.\n{page}\n\nSecond page: we owe 42 units.\n{page}"
    for field_type in ("amount", "id"):
        assert not [c for c in find_candidates(field_type, text) if c.text in ("1", "2", "3", "4")], field_type
    assert [c.text for c in find_candidates("amount", text)] == ["12", "42"]
    # a number on its own line inside a page stays: a table's cell, a receipt's total
    assert [c.text for c in find_candidates("amount", "TOTAL\n42\nThank you")] == ["42"]


def test_an_excluded_span_is_not_offered_again():
    text = "refund order 55501 for 55501"
    first = find_candidates("id", text)
    assert [c.text for c in first] == ["55501"]
    again = find_candidates("id", text, exclude=frozenset({(first[0].start, first[0].end)}))
    assert [(c.text, c.start) for c in again] == [("55501", text.rindex("55501"))]  # its other occurrence


@pytest.mark.parametrize("path", ["tickets/bitext/validation.csv", "invoices/invoice2data"])
def test_every_gold_value_of_the_shared_data_is_a_candidate(config, path):
    """The ceiling of grounded extraction on our labelled data: every present gold value is offered."""
    types = {s.name: s.type for specs in config.fields.values() for s in specs}
    missed, n = [], 0
    for ex in load_examples(SHARED_DATA / path):
        for name, gold in ex.fields.items():
            if name in types and gold:
                n += 1
                if not any(field_match(types[name], gold, c.text) for c in find_candidates(types[name], ex.text)):
                    missed.append((ex.example_id, name, gold))
    assert n > 10 and missed == []


def test_an_amount_written_with_its_currency_is_offered_as_the_number_alone_too():
    """bench/invoice_fields.py: a small tier that began writing "7,996.12" of "USD 7,996.12" was held by the grammar
    to the only candidate that starts so, a line's quantity "7" (3 of 10 letters); receipts' "TOTAL £17,935.37" lost
    to "SUBTOTAL 14,946.14". Both forms of one sum are offered, each where it stands in the text."""
    text = "The amount of USD 7,996.12 is due.\n- Domain renewal: 7 at USD 80.91\nSUBTOTAL 14,946.14\nTOTAL £17,935.37"
    found = find_candidates("amount", text)
    assert [c.text for c in found] == ["USD 7,996.12", "7,996.12", "7", "USD 80.91", "80.91", "14,946.14",
                                       "£17,935.37", "17,935.37"]
    assert all(text[c.start:c.end] == c.text for c in found)
    assert _texts("amount", "refund $5 now") == ["$5", "5"]
    assert _texts("id", text) == []  # neither form of a sum is an id


def test_a_subtotal_is_a_part_of_the_sum_its_tax_makes_and_the_total_is_not():
    """A receipt's SUBTOTAL was the small tier's total on 5 of 10 held-out receipts (bench/invoice_fields.py)."""
    receipt = "SUBTOTAL 14,946.14\nVAT 20% 2,989.23\nTOTAL £17,935.37\nAuth code 4471"
    assert sum_it_is_part_of("14946.14", receipt) == "17935.37"
    assert sum_it_is_part_of("17935.37", receipt) is None
    # the sum printed before one part, after the other (Azure Interior's "Subtotal 262.90 ... on $ 112.90")
    assert sum_it_is_part_of("112.90", "Olive Oil 150.00\nSubtotal 262.90\nTax 15% on $ 112.90") == "262.90"
    # a payment is no sum: the cash tendered comes before the change
    assert sum_it_is_part_of("17.20", "TOTAL 17.20\nCASH 20.00\nCHANGE 2.80") is None
    # whole numbers make sums by chance (a quantity, a page number): only amounts written with cents count
    assert sum_it_is_part_of("1939", "Rs 1939 for 1 room\nPage 1940") is None
    assert sum_it_is_part_of("not a number", receipt) is None and sum_it_is_part_of("0", receipt) is None


def test_no_total_of_the_shared_invoices_or_of_any_generated_layout_is_a_part_of_a_sum(tmp_path):
    """The check "total" must not send a right total up a tier: the gold totals of the real invoices and of
    generated invoices of every layout are no part of a sum."""
    write_invoices(tmp_path, list(LAYOUTS), 4, seed=1)
    examples = [*load_examples(SHARED_DATA / "invoices/invoice2data"), *load_examples(tmp_path)]
    totals = [(ex.example_id, ex.fields["total_amount"], ex.text) for ex in examples
              if ex.fields.get("total_amount")]
    assert len(totals) >= 10 + 4 * len(LAYOUTS)
    flagged = [(name, total) for name, total, text in totals
               if sum_it_is_part_of(normalize("amount", total)[0], text)]
    assert flagged == []
