"""Synthetic invoice PDFs with known fields, to train and judge PDF field extraction on layouts no model saw.

    uv run python bench/make_invoices.py --out DIR [--layouts classic,european,...] [--per-layout 40] [--seed 0]

Each invoice is a PDF and a JSON of its fields, as in ../shared/data/invoices/invoice2data, so
`sluicegate finetune --train DIR` and `sluicegate evaluate --data DIR` read a folder of them as they read the
real invoices (processors/datasets.py: invoice2data). The JSON also names its `layout`.

The five layouts differ in what they call the invoice number, how they write the date and the money, and where
these stand (a table, a narrow till receipt, a letter in prose). Every invoice also carries values of the same
types that are not the answer: customer and order numbers, a phone number, a due date, the subtotal, the tax
and the line amounts. Hold layouts out: train on some, judge on the others (issue 12: "use several layouts and
hold some layouts out"). Text is drawn in fpdf2's core fonts (Latin-1 only): the euro is written EUR and the
rupee Rs. A classic invoice is in dollars or pounds, so a total is not learned as "whatever follows a $".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ISSUERS = ["Northwind Traders", "Blue Harbor Supplies", "Kestrel Office Systems", "Meridian Print Works",
           "Alder & Finch Consulting", "Granite Peak Hosting", "Oakridge Lab Equipment", "Silverline Logistics",
           "Brightwater Catering", "Copperfield Tools", "Nordlicht Software", "Vega Cloud Services"]
CUSTOMERS = ["Jane Okafor", "Lucas Meyer", "Priya Raman", "Tomasz Nowak", "Emma Laurent", "Daniel Reyes",
             "Aiko Tanaka", "Sofia Rossi", "Henrik Berg", "Grace Mensah"]
STREETS = ["Harbour Road", "Linden Allee", "Market Street", "Rue des Fleurs", "MG Road", "Station Lane"]
ITEMS = ["Consulting hours", "Printer toner", "Cloud server (monthly)", "Office chairs", "Cable set",
         "Annual support plan", "Catering for 12", "Shipping and handling", "Software licence", "Lab gloves (box)",
         "Domain renewal", "Installation service", "Paper A4 (500 sheets)", "Backup storage 1 TB"]


@dataclass
class Invoice:
    """One synthetic invoice: the fields an extractor must find, and the values that must not fool it."""
    layout: str
    issuer: str
    customer: str
    street: str
    number: str  # the invoice number, exactly as printed
    issued: date
    due: date
    currency: str  # ISO code
    symbol: str  # how the money is written: a currency sign or code
    lines: list[tuple[str, int, Decimal]]  # description, quantity, unit price
    tax_rate: Decimal
    customer_number: str
    order_number: str
    phone: str
    subtotal: Decimal = field(init=False)
    tax: Decimal = field(init=False)
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        cents = Decimal("0.01")
        self.subtotal = sum((q * p for _, q, p in self.lines), Decimal(0)).quantize(cents)
        self.tax = (self.subtotal * self.tax_rate / 100).quantize(cents, ROUND_HALF_UP)
        self.total = self.subtotal + self.tax

    def expected(self) -> dict:
        """invoice2data's keys (processors/datasets.py maps them to the PDF configuration's fields)."""
        return {"issuer": self.issuer, "invoice_number": self.number, "date": self.issued.isoformat(),
                "amount": float(self.total), "amount_untaxed": float(self.subtotal), "currency": self.currency,
                "lines": [{"name": n, "quantity": q, "price_unit": str(p)} for n, q, p in self.lines],
                "desc": f"Invoice from {self.issuer}", "layout": self.layout,
                # the decoys: values of the fields' types that are not the answer
                "customer_number": self.customer_number, "order_number": self.order_number}


def _money(value: Decimal, decimal_comma: bool = False) -> str:
    text = f"{value:,.2f}"
    return text.replace(",", " ").replace(".", ",").replace(" ", ".") if decimal_comma else text


def _pdf(width_mm: float = 210, height_mm: float = 297):
    from fpdf import FPDF

    pdf = FPDF(unit="mm", format=(width_mm, height_mm))
    pdf.set_auto_page_break(True, margin=12)
    pdf.set_creation_date(datetime(2026, 1, 1))  # the same bytes for the same seed
    pdf.add_page()
    return pdf


def _line(pdf, text: str, size: float = 10, style: str = "", align: str = "L", height: float = 5.5) -> None:
    from fpdf.enums import XPos, YPos

    pdf.set_font("Helvetica", style, size)
    pdf.cell(0, height, text, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _row(pdf, cells: list[tuple[str, float, str]], size: float = 9, style: str = "") -> None:
    """One table row: (text, width in mm, align) per cell."""
    from fpdf.enums import XPos, YPos

    pdf.set_font("Helvetica", style, size)
    for i, (text, width, align) in enumerate(cells):
        last = i == len(cells) - 1
        pdf.cell(width, 6, text, border="B", align=align, new_x=XPos.LMARGIN if last else XPos.RIGHT,
                 new_y=YPos.NEXT if last else YPos.TOP)


def _classic(inv: Invoice):
    """A US-style invoice in dollars or pounds: the number and dates in a block on the right, a table, the
    total at the bottom."""
    pdf = _pdf()
    _line(pdf, inv.issuer, 14, "B")
    _line(pdf, f"{inv.street} 12, Springfield  -  Phone {inv.phone}")
    _line(pdf, "INVOICE", 20, "B", "R", 10)
    for text in (f"Invoice No: {inv.number}", f"Invoice Date: {inv.issued:%B} {inv.issued.day}, {inv.issued:%Y}",
                 f"Due Date: {inv.due:%B} {inv.due.day}, {inv.due:%Y}", f"Customer ID: {inv.customer_number}",
                 f"PO Number: {inv.order_number}"):
        _line(pdf, text, align="R")
    pdf.ln(4)
    _line(pdf, "Bill To:", style="B")
    _line(pdf, inv.customer)
    pdf.ln(4)
    _row(pdf, [("Description", 90, "L"), ("Qty", 20, "R"), ("Unit Price", 35, "R"), ("Amount", 35, "R")], style="B")
    for name, qty, price in inv.lines:
        _row(pdf, [(name, 90, "L"), (str(qty), 20, "R"), (f"{inv.symbol}{_money(price)}", 35, "R"),
                   (f"{inv.symbol}{_money(qty * price)}", 35, "R")])
    pdf.ln(3)
    _line(pdf, f"Subtotal: {inv.symbol}{_money(inv.subtotal)}", align="R")
    _line(pdf, f"Sales Tax ({inv.tax_rate}%): {inv.symbol}{_money(inv.tax)}", align="R")
    _line(pdf, f"Total Due: {inv.symbol}{_money(inv.total)}", 12, "B", "R")
    return pdf


def _european(inv: Invoice):
    """A continental invoice: decimal commas, day.month.year, the currency code after the amount."""
    pdf = _pdf()
    _line(pdf, f"{inv.issuer} GmbH  |  {inv.street} 4  |  10115 Berlin", 8)
    pdf.ln(6)
    _line(pdf, inv.customer)
    _line(pdf, f"{inv.street} 77")
    pdf.ln(6)
    _line(pdf, "Invoice", 16, "B")
    _row(pdf, [("Invoice number", 45, "L"), ("Invoice date", 40, "L"), ("Customer number", 45, "L"),
               ("Order", 50, "L")], style="B")
    _row(pdf, [(inv.number, 45, "L"), (f"{inv.issued:%d.%m.%Y}", 40, "L"), (inv.customer_number, 45, "L"),
               (inv.order_number, 50, "L")])
    pdf.ln(4)
    _row(pdf, [("Pos.", 15, "L"), ("Description", 85, "L"), ("Quantity", 25, "R"), ("Total", 55, "R")], style="B")
    for i, (name, qty, price) in enumerate(inv.lines, 1):
        _row(pdf, [(str(i), 15, "L"), (name, 85, "L"), (str(qty), 25, "R"),
                   (f"{_money(qty * price, True)} EUR", 55, "R")])
    pdf.ln(3)
    _line(pdf, f"Net amount {_money(inv.subtotal, True)} EUR", align="R")
    _line(pdf, f"VAT {inv.tax_rate}% {_money(inv.tax, True)} EUR", align="R")
    _line(pdf, f"Total amount {_money(inv.total, True)} EUR", 11, "B", "R")
    pdf.ln(4)
    _line(pdf, f"Payable without deduction by {inv.due:%d.%m.%Y}. Tel. {inv.phone}", 8)
    return pdf


def _receipt(inv: Invoice):
    """A till receipt on a narrow roll: short labels, capitals, the pound sign."""
    pdf = _pdf(80, 200)
    pdf.set_margins(5, 5, 5)
    _line(pdf, inv.issuer.upper(), 11, "B", "C")
    _line(pdf, f"Tel {inv.phone}", 8, align="C")
    _line(pdf, f"RECEIPT {inv.number}", 9, "B")
    _line(pdf, f"{inv.issued.day} {inv.issued:%b %Y} {10 + inv.issued.day % 9}:{inv.issued.month * 4:02d}", 8)
    _line(pdf, f"Member {inv.customer_number}", 8)
    for name, qty, price in inv.lines:
        _line(pdf, f"{qty} x {name[:22]}", 8)
        _line(pdf, f"GBP {_money(qty * price)}", 8, align="R")
    _line(pdf, f"SUBTOTAL {_money(inv.subtotal)}", 8, align="R")
    _line(pdf, f"VAT {inv.tax_rate}% {_money(inv.tax)}", 8, align="R")
    _line(pdf, f"TOTAL \xa3{_money(inv.total)}", 10, "B", "R")
    _line(pdf, f"Auth code {inv.order_number}", 7)
    return pdf


def _statement(inv: Invoice):
    """An Indian tax invoice: a bill number among other ids, day-month-year, Rs. and two tax lines."""
    pdf = _pdf()
    _line(pdf, "TAX INVOICE", 15, "B", "C")
    _line(pdf, f"Sold by: {inv.issuer} Pvt. Ltd., {inv.street}, Bengaluru", 9)
    _line(pdf, f"GSTIN: 29{inv.customer_number}Z5   Phone: {inv.phone}", 9)
    pdf.ln(3)
    _row(pdf, [(f"Order ID: {inv.order_number}", 90, "L"), (f"Bill No: {inv.number}", 90, "L")])
    ordered = inv.issued - timedelta(days=3)
    _row(pdf, [(f"Order Date: {ordered:%d-%m-%Y}", 90, "L"), (f"Bill Date: {inv.issued:%d-%m-%Y}", 90, "L")])
    pdf.ln(3)
    _line(pdf, f"Ship to: {inv.customer}", 9)
    pdf.ln(2)
    _row(pdf, [("Product", 90, "L"), ("Qty", 20, "R"), ("Price", 35, "R"), ("Total", 35, "R")], style="B")
    for name, qty, price in inv.lines:
        _row(pdf, [(name, 90, "L"), (str(qty), 20, "R"), (_money(price), 35, "R"), (_money(qty * price), 35, "R")])
    half = (inv.tax / 2).quantize(Decimal("0.01"))
    _line(pdf, f"Taxable value: {_money(inv.subtotal)}", 9, align="R")
    _line(pdf, f"CGST {inv.tax_rate / 2}%: {_money(half)}", 9, align="R")
    _line(pdf, f"SGST {inv.tax_rate / 2}%: {_money(inv.tax - half)}", 9, align="R")
    _line(pdf, f"Grand Total Rs. {_money(inv.total)}", 11, "B", "R")
    return pdf


def _letter(inv: Invoice):
    """A letter: the number, the date and the total inside sentences, beside a due date and an account number."""
    pdf = _pdf()
    pdf.set_margins(25, 20, 25)
    _line(pdf, inv.issuer, 13, "B")
    _line(pdf, f"{inv.street} 9, Boston MA  -  {inv.phone}", 9)
    pdf.ln(8)
    _line(pdf, inv.customer)
    pdf.ln(6)
    pdf.set_font("Helvetica", "", 10)
    pdf.multi_cell(0, 5.5, (
        f"Dear {inv.customer.split()[0]},\n\nplease find enclosed our invoice {inv.number} dated "
        f"{inv.issued.day} {inv.issued:%B %Y} for the work listed below. The amount of USD {_money(inv.total)} "
        f"(USD {_money(inv.subtotal)} plus {inv.tax_rate}% tax, USD {_money(inv.tax)}) "
        f"is due by {inv.due.day} {inv.due:%B %Y}. "
        f"Please quote your account number {inv.customer_number} when paying.\n"))
    for name, qty, price in inv.lines:
        _line(pdf, f"- {name}: {qty} at USD {_money(price)}", 9)
    pdf.ln(4)
    _line(pdf, "Kind regards,")
    _line(pdf, f"Accounts, {inv.issuer}")
    return pdf


@dataclass(frozen=True)
class Layout:
    draw: Callable[[Invoice], object]
    currencies: tuple[tuple[str, str], ...]  # (ISO code, how the layout writes it); one is drawn per invoice
    number: Callable[[random.Random, date], str]  # the invoice number's format
    tax_rates: tuple[int, ...]


LAYOUTS: dict[str, Layout] = {
    "classic": Layout(_classic, (("USD", "$"), ("GBP", "\xa3")),
                      lambda r, d: f"INV-{d.year}-{r.randint(1, 99999):05d}", (0, 6, 7, 8)),
    "european": Layout(_european, (("EUR", "EUR"),),
                       lambda r, d: f"{d.year}/{r.randint(100, 9999):04d}", (7, 19, 20, 21)),
    "receipt": Layout(_receipt, (("GBP", "\xa3"),), lambda r, d: f"{r.randint(1, 999999):06d}", (0, 20)),
    "statement": Layout(_statement, (("INR", "Rs."),),
                        lambda r, d: f"{r.choice('FKMB')}{r.choice('ABCT')}-{r.randint(10**6, 10**7 - 1)}",
                        (5, 12, 18)),
    "letter": Layout(_letter, (("USD", "USD"),), lambda r, d: str(r.randint(10000, 999999)), (0, 5, 10)),
}


def make_invoice(layout: str, rng: random.Random) -> Invoice:
    spec = LAYOUTS[layout]
    issued = date(2019, 1, 1) + timedelta(days=rng.randint(0, 2800))
    lines = [(rng.choice(ITEMS), rng.randint(1, 12), Decimal(rng.randint(50, 90000)) / 100)
             for _ in range(rng.randint(1, 6))]
    invoice = Invoice(layout, rng.choice(ISSUERS), rng.choice(CUSTOMERS), rng.choice(STREETS),
                      spec.number(rng, issued), issued, issued + timedelta(days=rng.choice((14, 30, 45))),
                      *spec.currencies[0], lines, Decimal(rng.choice(spec.tax_rates)),
                      customer_number=f"{rng.randint(10000, 99999)}{rng.choice('ABCDEFGHJK')}{rng.randint(100, 999)}"
                      if layout == "statement" else str(rng.randint(100000, 999999)),
                      order_number=str(rng.randint(10**9, 10**10 - 1)),
                      phone=f"+{rng.choice((1, 44, 49, 91))} {rng.randint(100, 999)} {rng.randint(1000000, 9999999)}")
    if len(spec.currencies) > 1:  # drawn last: a one-currency layout's invoices stay as they were
        invoice.currency, invoice.symbol = rng.choice(spec.currencies)
    return invoice


def write_invoices(out: Path, layouts: list[str], per_layout: int, seed: int = 0) -> list[Path]:
    """Writes per_layout invoices of each layout (PDF + JSON) into out; returns the PDFs' paths."""
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        raise ValueError(f"unknown layouts {unknown}; known: {sorted(LAYOUTS)}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for layout in layouts:
        rng = random.Random(f"{seed}:{layout}")  # a layout's invoices do not depend on which others are made
        for i in range(per_layout):
            invoice = make_invoice(layout, rng)
            path = out / f"{layout}-{i:04d}.pdf"
            LAYOUTS[layout].draw(invoice).output(str(path))
            path.with_suffix(".json").write_text(json.dumps([invoice.expected()], indent=2) + "\n", encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the PDFs and their JSON")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    parser.add_argument("--per-layout", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write_invoices(Path(args.out), [s for s in args.layouts.split(",") if s], args.per_layout, args.seed)
    print(f"{len(written)} invoices in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
