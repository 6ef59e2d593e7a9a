"""The report: report.md, summary.json, outcomes.parquet and the reliability / escalation plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from processors import calibration as cal
from processors.evaluate.fitting import BOTH, calibrated_conf, cascade_quality, fit_rows, judged_rows
from processors.evaluate.outcomes import outcomes_by_task
from processors.evaluate.summarize import tier_quality
from processors.evaluate.summary import ALL_FIELDS, ItemSummary
from processors.routing import FIELDS_KEY

if TYPE_CHECKING:
    from processors.evaluate.evaluation import Evaluation

ROW_NAMES = {"linear": "tier 0 (linear) alone", "small": "small alone", "large": "large alone",
             "cascade": "cascade (configured thresholds)",
             "cascade_calibrated": "cascade (calibrated, chosen thresholds)"}


def format_figure(value: float | None, pct: bool = False, digits: int = 3, missing: str = "–") -> str:
    """A report figure: a percentage or a fixed number of digits; `missing` for none or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value:.1%}" if pct else f"{value:.{digits}f}"


def report_markdown(ev: Evaluation, images: bool = True, extra: Sequence[str] = ()) -> str:
    """The report as Markdown: per task the small / large / cascade table, cost and speed, calibration."""
    s = ev.summary
    lines = ["# sluicegate evaluation", "",
             f"{s.n_docs} documents, {s.n_items} scored items; tiers: {', '.join(s.tiers)}; "
             f"models: {', '.join(f'{k} `{v}`' for k, v in s.model_versions.items())}; "
             f"model version: `{s.config_model_version or 'base (none)'}`.", ""]
    lines += [f"- {n}" for n in [*extra, *s.notes]]

    def tier_table(entry: ItemSummary, quality: list[tuple[str, str]]) -> list[str]:
        head = "| tier | " + " | ".join(q for _, q in quality) + \
            " | tier 0 decides | escalation | review | cost / 1k docs | hosted large / 1k docs | docs/s |"
        out = [head, "|" + "---|" * (head.count("|") - 1)]
        for key, name in ROW_NAMES.items():
            e = entry.row(key)
            if e is None:
                continue
            c = s.cost.get(key)
            esc = e.escalation_rate if e.escalation_rate is not None else (1.0 if key == "large" else 0.0)
            out.append(f"| {name} | " + " | ".join(format_figure(getattr(e, q)) for q, _ in quality)
                       + f" | {format_figure(e.linear_rate, True)}"
                       + f" | {format_figure(esc, True)} | {format_figure(e.review_rate, True)}"
                       + f" | {format_figure(c.cost_per_1000_docs if c else None, digits=4)}"
                       + f" | {format_figure(c.cost_per_1000_docs_hosted_large if c else None, digits=4)}"
                       + f" | {format_figure(c.docs_per_second if c else None, digits=2)} |")
        return out

    for task, entry in s.tasks.items():
        lines += ["", f"## Task `{task}` ({entry.n} items)", ""]
        lines += tier_table(entry, [("accuracy", "accuracy"), ("macro_f1", "macro-F1")])
        lines += ["", *recall_table(entry)]
        if images:
            lines += ["", f"![reliability]({_png('reliability', task)}) ![escalation]({_png('escalation', task)})"]
    for name, entry in s.fields.items():
        lines += ["", f"## Field `{name}` ({entry.n} items)" if name != ALL_FIELDS
                  else f"## All fields together ({entry.n} items)", ""]
        lines += tier_table(entry, [("f1", "F1"), ("precision", "precision"), ("recall", "recall"),
                                   ("absent_accuracy", "absent right")])
        if images and name == ALL_FIELDS:
            lines += ["", f"![reliability]({_png('reliability', FIELDS_KEY)}) "
                      f"![escalation]({_png('escalation', FIELDS_KEY)})"]

    lines += ["", "## Cost and speed (whole documents)", "",
              f"Prices per million tokens: small {ev.config.small.price_per_million_tokens}, large "
              f"{ev.config.large.price_per_million_tokens}, hosted large {s.hosted_price_per_million_tokens} "
              "(the 'hosted large' column prices the large tier's tokens as a hosted API would). The large tier "
              "is run item by item here, so its docs/s is a little lower than in a nightly run; the cascade's "
              "time is the small tier on everything plus the large tier on what it escalates.", "",
              "| tier | tokens / doc | cost / 1k docs | hosted large / 1k docs | docs/s | docs escalated | load s |",
              "|---|---|---|---|---|---|---|"]
    for key, name in ROW_NAMES.items():
        c = s.cost.get(key)
        if c is not None:
            lines.append(f"| {name} | {format_figure(c.tokens_per_doc, digits=0)}"
                         f" | {format_figure(c.cost_per_1000_docs, digits=4)}"
                         f" | {format_figure(c.cost_per_1000_docs_hosted_large, digits=4)}"
                         f" | {format_figure(c.docs_per_second, digits=2)}"
                         f" | {format_figure(c.docs_escalated, True)}"
                         f" | {format_figure(c.load_seconds, digits=1)} |")
    lines += ["", "## Calibration (expected calibration error, 10 bins)", "",
              "| tier:task | items | method | temperature | ECE before | ECE after | after measured on |",
              "|---|---|---|---|---|---|---|"]
    for key, c in s.calibration.items():
        lines.append(f"| {key} | {c.n} | {c.method} | "
                     f"{format_figure(c.temperature, digits=2) if 'temperature' in c.method else '–'} | "
                     f"{format_figure(c.ece_before)} | {format_figure(c.ece_after)} | {c.after_on} |")
    th = s.thresholds
    if th.chosen:
        lines += ["", "## Thresholds", "",
                  "Chosen on the fit half (the quality, escalation and review figures here are the fit half's; the "
                  "tables above measure the chosen thresholds on the judge half). The unsure items are those the "
                  "escalation budget would send up on confidence: how often each tier is right on them is the "
                  "evidence for escalating, and a threshold of 0 is kept only where the large tier is right on "
                  "fewer of them.", "",
                  "| task | configured small / large | chosen small / large | target | escalation | cascade quality"
                  " | small-only | large-only | review | unsure items | small right | large right | evidence |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, t in th.chosen.items():
            c = th.configured.get(key)
            p = th.operating_points[key]
            lines.append(f"| {key} | {format_figure(None if c is None else c.small, digits=2)} / "
                         f"{format_figure(None if c is None else c.large, digits=2)} | "
                         f"{format_figure(t.small)} / {format_figure(t.large)} | {p.target} | "
                         f"{format_figure(p.escalation_rate, True)} | {format_figure(p.quality)} | "
                         f"{format_figure(p.small_quality)} | {format_figure(p.large_quality)} | "
                         f"{format_figure(p.review_rate, True)} | {p.unsure_items} | {p.unsure_small_right} | "
                         f"{p.unsure_large_right} | {p.evidence} |")
    return "\n".join(lines) + "\n"


def recall_table(entry: ItemSummary) -> list[str]:
    """A label task's recall per gold label and row: where each row's accuracy comes from (a tier that leans to
    the most common label can win accuracy and lose the rare labels)."""
    rows = {key: q for key in ROW_NAMES if (q := entry.row(key)) is not None and q.label_recall}
    if not rows:
        return []
    support: dict[str, int] = {}
    for q in rows.values():
        for label, n in (q.label_support or {}).items():
            support[label] = max(support.get(label, 0), n)
    head = "| recall of gold label | items | " + " | ".join(ROW_NAMES[k] for k in rows) + " |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, n in sorted(support.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"| {label} | {n} | " + " | ".join(format_figure(q.label_recall.get(label)) for q in rows.values())
                   + " |")
    return out


def _png(kind: str, key: str) -> str:
    return f"{kind}_{''.join(c if c.isalnum() or c in '-_' else '_' for c in key)}.png"


def write_report(ev: Evaluation, out: str | Path, extra: Sequence[str] = ()) -> dict[str, Path]:
    """outcomes.parquet, summary.json, report.md and the PNG plots into `out`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"outcomes": out / "outcomes.parquet", "summary": out / "summary.json", "report": out / "report.md"}
    ev.outcomes.write_parquet(paths["outcomes"])
    paths["summary"].write_text(json.dumps(ev.summary.to_dict(), indent=2, default=str, allow_nan=True) + "\n",
                                encoding="utf-8")
    fitted_on = outcomes_by_task(fit_rows(ev.outcomes))
    for key, frame in outcomes_by_task(judged_rows(ev.outcomes)).items():  # calibration judged on held-out rows
        paths[f"reliability:{key}"] = _plot_reliability(ev, key, frame, out / _png("reliability", key))
        if "large" in ev.tiers and "small" in ev.tiers and key in fitted_on:  # where the thresholds were chosen
            paths[f"escalation:{key}"] = _plot_escalation(ev, key, fitted_on[key], out / _png("escalation", key))
    paths["report"].write_text(report_markdown(ev, extra=extra), encoding="utf-8")
    return paths


def _plot_reliability(ev: Evaluation, key: str, frame: pl.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ev.tiers), figsize=(5.2 * len(ev.tiers), 4.6), squeeze=False)
    for ax, tier in zip(axes[0], ev.tiers, strict=True):
        f = frame.filter(pl.col(f"{tier}_conf").is_not_null())
        ok = f[f"{tier}_correct"].to_list()
        raw = f[f"{tier}_conf"].to_list()
        # The stored calibration (fitted on the fit half) applied to these judged rows.
        after = calibrated_conf(f, key, tier, ev.calibration.get(f"{tier}:{key}")) if len(f) else []
        how = "in-sample" if len(f) and (f["split"] == BOTH).all() else "fitted on the other half"
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        for conf, name, color in ((raw, "raw", "tab:red"), (after, f"calibrated ({how})", "tab:blue")):
            bins = cal.reliability(conf, ok)
            if bins:
                ax.plot([b.confidence for b in bins], [b.accuracy for b in bins], marker="o", color=color,
                        label=f"{name}: ECE {cal.ece(conf, ok):.3f}")
                for b in bins:
                    ax.annotate(str(b.count), (b.confidence, b.accuracy), textcoords="offset points",
                                xytext=(3, -10), fontsize=7, color=color)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence (bin mean)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{tier} tier: {key} ({len(f)} items)")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Reliability: {key} (numbers: items per bin)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_escalation(ev: Evaluation, key: str, frame: pl.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s_conf = calibrated_conf(frame, key, "small", ev.calibration.get(f"small:{key}"))
    invalid = [not v for v in frame["small_valid"].to_list()]
    points = cal.cascade_curve(s_conf, invalid, frame["small_correct"].to_list(), frame["large_correct"].to_list(),
                               cascade_quality(frame, key))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    if points:
        ax.plot([p.escalation_rate for p in points], [p.quality for p in points], color="tab:blue",
                label="cascade (calibrated small confidence)")
        ax.axhline(points[0].small_quality, color="tab:red", linestyle=":", label="small alone")
        ax.axhline(points[0].large_quality, color="tab:green", linestyle=":", label="large alone")
    configured = frame.filter(pl.col("decided_by").is_not_null())
    if len(configured):
        esc = float(configured["decided_by"].is_in(["large", "review"]).mean())
        kind = "label" if key != FIELDS_KEY else "field"
        q = tier_quality(configured, kind, "cascade_pred", "cascade_correct").quality
        ax.scatter([esc], [q], marker="s", s=60, color="tab:orange", zorder=5,
                   label=f"configured thresholds ({esc:.0%}, {q:.3f})")
    if key in ev.operating_points:
        p = ev.operating_points[key]
        ax.scatter([p.escalation_rate], [p.quality], marker="*", s=200, color="black", zorder=6,
                   label=f"chosen: small < {ev.thresholds[key].small:.3f} ({p.escalation_rate:.0%}, {p.quality:.3f})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("escalation rate (share of items sent to the large tier)")
    ax.set_ylabel("accuracy" if key != FIELDS_KEY else "F1 over present values")
    ax.set_title(f"Quality vs escalation: {key} ({len(frame)} items, fit half)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
