"""Confidence calibration and threshold choice: pure functions over (confidence, correct) data.

- Label tasks: temperature scaling of the label distribution (p_i ** (1/T), renormalised), T fitted by
  minimising the negative log-likelihood of the gold labels. One parameter: it cannot overfit a few
  hundred items, and the chosen label never changes (only how sure the tier is).
- Fields: isotonic regression of correctness on the raw (length-robust) confidence, stored as the
  (x, y) points of a piecewise-linear map, so applying it needs no scikit-learn.
- Thresholds: from per-item small/large outcomes, for a target escalation rate or for a target quality
  (the cascade within a gap of large-only quality at the lowest escalation rate). Thresholds live in
  the calibrated confidence space: the run calibrates before it routes (processors/tiers.py).

Applying a calibration is cheap and import-light (it runs on every prediction in Beam workers);
fitting imports scipy / scikit-learn lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from processors.routing import FIELDS_KEY, below_threshold, fields_key, is_fields_key
from schemas.config import TaskCalibration, Thresholds
from schemas.records import FieldPrediction, LabelPrediction

MIN_ITEMS = 10  # fewer labelled items than this: no calibration is fitted (method none)
_EPS = 1e-12


# --- applying ------------------------------------------------------------------------------------

def _usable(cal: TaskCalibration | None) -> bool:
    if cal is None or cal.method == "none":
        return False
    if cal.method == "isotonic":
        return len(cal.x) >= 1 and len(cal.x) == len(cal.y)
    return cal.temperature > 0 and cal.temperature != 1.0


def apply_label(dist: dict[str, float], cal: TaskCalibration | None) -> dict[str, float]:
    """A label distribution, temperature-scaled (isotonic and none leave the distribution as it is)."""
    if not dist or not _usable(cal) or cal.method != "temperature":
        return dist
    inv = 1.0 / cal.temperature
    logs = {k: math.log(max(p, _EPS)) * inv for k, p in dist.items()}
    top = max(logs.values())
    scaled = {k: math.exp(v - top) for k, v in logs.items()}  # shifted: no underflow at small T
    total = sum(scaled.values())
    return {k: v / total for k, v in scaled.items()}


def apply_confidence(conf: float, cal: TaskCalibration | None) -> float:
    """One confidence, calibrated: isotonic map, or temperature on the two-way (right / wrong) split."""
    if not _usable(cal):
        return conf
    if cal.method == "isotonic":
        return float(np.interp(conf, cal.x, cal.y))
    p = min(max(conf, _EPS), 1 - _EPS)
    a, b = p ** (1 / cal.temperature), (1 - p) ** (1 / cal.temperature)
    return a / (a + b)


def calibrate_label(pred: LabelPrediction, cal: TaskCalibration | None) -> LabelPrediction:
    """The prediction with calibrated probabilities and confidence; the label itself never changes."""
    if not _usable(cal) or not pred.valid or pred.label is None:
        return pred
    if cal.method == "temperature":
        dist = apply_label(pred.probabilities, cal)
        return replace(pred, probabilities=dist, confidence=float(dist.get(pred.label, 0.0)))
    return replace(pred, confidence=apply_confidence(pred.confidence, cal))


def calibration_of(calibration: dict[str, TaskCalibration], tier: str, key: str) -> TaskCalibration | None:
    """The calibration '<tier>:<key>' applies. A source's fields ('fields:<source>') have their own when the
    version was fitted on enough of them (processors/evaluate/fitting.py; 'none' included: its own fit did
    not help), else share the fields' one."""
    own = calibration.get(f"{tier}:{key}")
    if own is None and is_fields_key(key):
        return calibration.get(f"{tier}:{FIELDS_KEY}")
    return own


def field_calibration(calibration: dict[str, TaskCalibration], tier: str, source: str | None) -> TaskCalibration | None:
    """The calibration one source's field values get (calibration_of 'fields:<source>')."""
    return calibration_of(calibration, tier, fields_key(source) if source else FIELDS_KEY)


def calibrate_field(pred: FieldPrediction, cal: TaskCalibration | None) -> FieldPrediction:
    if not _usable(cal):
        return pred
    return replace(pred, confidence=apply_confidence(pred.confidence, cal))


# --- fitting -------------------------------------------------------------------------------------

def fit_temperature(dists: Sequence[dict[str, float]], gold: Sequence[str]) -> TaskCalibration:
    """Temperature T minimising the NLL of the gold labels under p_i ** (1/T) / sum_j p_j ** (1/T).

    Items whose distribution is empty (invalid output) or lacks the gold label are left out.
    """
    rows = [(d, g) for d, g in zip(dists, gold, strict=True) if d and g in d]
    if len(rows) < MIN_ITEMS:
        return TaskCalibration(method="none")
    from scipy.optimize import minimize_scalar

    labels = sorted({k for d, _ in rows for k in d})
    index = {k: i for i, k in enumerate(labels)}
    logp = np.full((len(rows), len(labels)), math.log(_EPS))
    for r, (d, _) in enumerate(rows):
        for k, p in d.items():
            logp[r, index[k]] = math.log(max(p, _EPS))
    gold_idx = np.array([index[g] for _, g in rows])

    def nll(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(log_norm - z[np.arange(len(rows)), gold_idx]))

    # T from 1/50 to 50: a wider range only matters for degenerate data (all right or all wrong).
    found = minimize_scalar(nll, bounds=(-math.log(50), math.log(50)), method="bounded",
                            options={"xatol": 1e-4})
    return TaskCalibration(method="temperature", temperature=round(float(math.exp(found.x)), 4))


def fit_isotonic(conf: Sequence[float], correct: Sequence[bool]) -> TaskCalibration:
    """Monotone map from raw confidence to observed accuracy, as (x, y) points.

    y is kept inside [1/(n+2), 1 - 1/(n+2)]: a tier that was right on every one of n items is not
    certain on the next one, and a 0 or 1 would freeze its routing whatever the threshold.
    """
    x = np.asarray(conf, dtype=float)
    y = np.asarray(correct, dtype=float)
    if len(x) < MIN_ITEMS:
        return TaskCalibration(method="none")
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)
    floor = 1.0 / (len(x) + 2)
    ys = np.clip(iso.y_thresholds_, floor, 1 - floor)
    return TaskCalibration(method="isotonic", x=[round(float(v), 6) for v in iso.X_thresholds_],
                           y=[round(float(v), 6) for v in ys])


# --- measuring -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReliabilityBin:
    lo: float
    hi: float
    confidence: float  # mean confidence in the bin
    accuracy: float
    count: int


def reliability(conf: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1] (empty bins left out), for ECE and reliability diagrams."""
    c = np.clip(np.asarray(conf, dtype=float), 0.0, 1.0)
    ok = np.asarray(correct, dtype=float)
    which = np.minimum((c * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(ReliabilityBin(b / bins, (b + 1) / bins, float(c[mask].mean()), float(ok[mask].mean()),
                                      int(mask.sum())))
    return out


def ece(conf: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over 10 equal bins."""
    n = len(conf)
    if n == 0:
        return float("nan")
    return float(sum(b.count * abs(b.accuracy - b.confidence) for b in reliability(conf, correct, bins)) / n)


# --- choosing thresholds -------------------------------------------------------------------------

# Most items a task may send up by default: the cascade exists to run the small model on most items.
MAX_ESCALATION = 0.15
# The best of a few hundred thresholds on a few hundred items flatters itself (it is the maximum of a noisy curve):
# it must beat threshold 0 by more than this many standard errors of the paired difference (a two-sided 95 % bar)
# before items escalate for it. Stop 44's intent escalation gained 1 item of 422 on the fit half (1.0 SE) and lost 1
# on the judged half; category's gained 2 (1.4 SE) and lost 1. Sentiment's 6 items (1.6 SE) still escalate on the
# unsure-slice evidence (the large tier is right more often there), which this rule does not override.
ESCALATION_GAIN_SE = 2.0


@dataclass(frozen=True)
class OperatingPoint:
    """Where the cascade runs at one small threshold (on one labelled set)."""

    threshold: float
    escalation_rate: float
    quality: float  # cascade quality (accuracy, or F1 over present values for fields) at this threshold
    small_quality: float
    large_quality: float
    review_rate: float = 0.0  # escalated items the large tier holds below its threshold
    target: str = ""
    # Where the small tier is least sure (the items the budget would escalate on confidence): how often
    # each tier is right there. The evidence for (or against) escalating.
    unsure_items: int = 0
    unsure_small_right: int = 0
    unsure_large_right: int = 0
    evidence: str = ""


class Quality(Protocol):
    """How a cascade is judged, for an escalated-items mask: its quality, and each item's share of it."""

    def __call__(self, up: np.ndarray) -> float: ...

    def influence(self, up: np.ndarray) -> np.ndarray:
        """Per item: how the quality moves with it (the delta method's linearisation; for accuracy, right or
        not). The spread of the paired differences between two masks gives their difference's standard error."""
        ...


@dataclass(frozen=True)
class Accuracy:
    """The share of items right: an escalated item takes the large tier's answer."""

    small_correct: np.ndarray
    large_correct: np.ndarray

    def __call__(self, up: np.ndarray) -> float:
        return float(self.influence(up).mean())

    def influence(self, up: np.ndarray) -> np.ndarray:
        return np.where(up, self.large_correct, self.small_correct).astype(float)


@dataclass(frozen=True)
class FieldF1:
    """F1 over present values (what fields are judged on): 2 * hits / (values given + values present)."""

    present: np.ndarray
    small_given: np.ndarray
    small_hit: np.ndarray
    large_given: np.ndarray
    large_hit: np.ndarray

    def _counts(self, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.where(up, self.large_hit, self.small_hit).astype(float),
                np.where(up, self.large_given, self.small_given).astype(float))

    def __call__(self, up: np.ndarray) -> float:
        hit, given = self._counts(up)
        total = given.sum() + self.present.sum()
        return float(2 * hit.sum() / total) if total else float("nan")

    def influence(self, up: np.ndarray) -> np.ndarray:
        hit, given = self._counts(up)
        total = given.sum() + self.present.sum()
        if not total:
            return np.zeros(len(hit))
        return len(hit) * (2 * hit - self(up) * (given + self.present)) / total


def paired_standard_error(quality: Quality, up_a: np.ndarray, up_b: np.ndarray) -> float:
    """The standard error of quality(up_a) - quality(up_b) on the same items (paired)."""
    diff = quality.influence(up_a) - quality.influence(up_b)
    return float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("inf")


def cascade_curve(small_conf: Sequence[float], small_invalid: Sequence[bool], small_correct: Sequence[bool],
                  large_correct: Sequence[bool], quality: Quality | None = None) -> list[OperatingPoint]:
    """Every distinct operating point of the small threshold, from escalating nothing to everything.

    An item escalates when the small tier's answer is invalid or its confidence is below the
    threshold (processors.routing's rule); an escalated item takes the large tier's answer. quality:
    the cascade's quality for an escalation mask (default: the share of items right; fields pass F1).
    """
    conf = np.asarray(small_conf, dtype=float)
    invalid = np.asarray(small_invalid, dtype=bool)
    s_ok = np.asarray(small_correct, dtype=bool)
    l_ok = np.asarray(large_correct, dtype=bool)
    n = len(conf)
    if n == 0:
        return []
    quality = Accuracy(s_ok, l_ok) if quality is None else quality
    s_q, l_q = quality(np.zeros(n, dtype=bool)), quality(np.ones(n, dtype=bool))
    decidable = ~invalid & ~np.isnan(conf)  # a NaN confidence escalates at every threshold
    values = np.unique(conf[decidable]) if decidable.any() else np.array([])
    # Thresholds between consecutive confidences (midpoints): the same split, and robust to rounding.
    cuts = [0.0] + [float((a + b) / 2) for a, b in zip(values[:-1], values[1:], strict=True)]
    cuts.append(float(min(1.0, values[-1] + 1e-6)) if len(values) else 1.0)
    points = []
    for t in cuts:
        up = invalid | below_threshold(conf, t)
        points.append(OperatingPoint(round(t, 6), float(up.mean()), quality(up), s_q, l_q))
    return points


def field_f1_quality(gold_present: Sequence[bool], small_given: Sequence[bool], small_correct: Sequence[bool],
                     large_given: Sequence[bool], large_correct: Sequence[bool]) -> Quality:
    """The cascade's F1 over present values for an escalation mask (what fields are judged on)."""
    present = np.asarray(gold_present, dtype=bool)
    s_given, l_given = np.asarray(small_given, dtype=bool), np.asarray(large_given, dtype=bool)
    return FieldF1(present, s_given, np.asarray(small_correct, dtype=bool) & s_given & present,
                   l_given, np.asarray(large_correct, dtype=bool) & l_given & present)


def review_threshold(large_conf: Sequence[float], review_below: float = 0.5, max_review_rate: float = 0.2) -> float:
    """The large tier's threshold: items it is more likely wrong than right on (calibrated confidence
    below `review_below`) go to review, but at most `max_review_rate` of the items it sees."""
    conf = np.sort(np.asarray(large_conf, dtype=float))
    if len(conf) == 0:
        return review_below
    cap = int(math.floor(max_review_rate * len(conf)))  # items allowed below the threshold
    if cap >= len(conf) or (conf < review_below).sum() <= cap:
        return review_below
    return float(conf[cap]) if cap > 0 else float(min(review_below, conf[0]))


def _better(a: float, b: float) -> bool:
    """a > b, where NaN is worse than any figure."""
    return (not math.isnan(a)) and (math.isnan(b) or a > b + 1e-12)


def choose_threshold(small_conf: Sequence[float], small_invalid: Sequence[bool], small_correct: Sequence[bool],
                     large_correct: Sequence[bool], large_conf: Sequence[float] | None = None, *,
                     target_escalation: float | None = None, target_quality_gap: float | None = None,
                     quality: Quality | None = None, review_below: float = 0.5,
                     max_review_rate: float = 0.2) -> tuple[Thresholds, OperatingPoint]:
    """Thresholds for one task from per-item outcomes (fit them on data the cascade is not judged on).

    The budget is target_escalation (default MAX_ESCALATION). By default, the best cascade quality within
    the budget, at the lowest escalation among equals, if it beats threshold 0 by more than
    ESCALATION_GAIN_SE standard errors of the paired difference on these items; otherwise threshold 0.
    target_quality_gap P: the lowest escalation at which the cascade is within P of the better of
    small-only and large-only.

    The unsure slice is the items the budget would escalate on confidence (the least sure ones). A
    threshold that escalates nothing on confidence (0) is kept only with evidence: the large tier is
    right on fewer of the unsure items than the small tier. Without it the best point (or, when no point
    beats 0, the unsure slice) escalates. The large threshold comes from review_threshold.
    """
    if target_escalation is not None and target_quality_gap is not None:
        raise ValueError("give a target escalation rate or a target quality gap, not both")
    conf = np.asarray(small_conf, dtype=float)
    invalid = np.asarray(small_invalid, dtype=bool)
    quality = Accuracy(np.asarray(small_correct, dtype=bool), np.asarray(large_correct, dtype=bool)) \
        if quality is None else quality
    points = cascade_curve(small_conf, small_invalid, small_correct, large_correct, quality)
    if not points:
        return Thresholds(), OperatingPoint(Thresholds().small, 0.0, float("nan"), float("nan"), float("nan"))
    budget = MAX_ESCALATION if target_escalation is None else target_escalation
    within = [p for p in points if p.escalation_rate <= budget + 1e-9] or [points[0]]
    gain_note, fallback = "", within[-1]
    if target_quality_gap is None:
        top = within[0]
        for p in within[1:]:  # ascending escalation: a point must be strictly better to cost more
            if _better(p.quality, top.quality):
                top = p
        best, none = top, points[0]  # threshold 0: only invalid answers escalate
        if top is not none and not math.isnan(top.quality):
            se = paired_standard_error(quality, invalid | below_threshold(conf, top.threshold),
                                       invalid | below_threshold(conf, none.threshold))
            gain = top.quality - none.quality
            if gain <= ESCALATION_GAIN_SE * se:
                best, fallback = none, top
                gain_note = (f"; the best point's gain over threshold 0 on these items, {gain:.4f}, is within "
                             f"{ESCALATION_GAIN_SE:g} standard errors ({se:.4f})")
        target = (f"best quality at escalation <= {budget:.0%}, if it beats threshold 0 by more than "
                  f"{ESCALATION_GAIN_SE:g} SE")
    else:
        reference = max((q for q in (points[0].small_quality, points[0].large_quality) if not math.isnan(q)),
                        default=float("nan"))
        good = [p for p in points if p.quality >= reference - target_quality_gap - 1e-9] or [points[-1]]
        best = good[0]
        target = f"quality >= best single tier - {target_quality_gap * 100:g} points"
    # The unsure slice: what the budget escalates on confidence, beyond the invalid answers.
    unsure = below_threshold(conf, within[-1].threshold) & ~invalid
    s_right = int(np.asarray(small_correct, dtype=bool)[unsure].sum())
    l_right = int(np.asarray(large_correct, dtype=bool)[unsure].sum())
    n_unsure = int(unsure.sum())
    if best.threshold == points[0].threshold and n_unsure:
        if l_right < s_right:
            evidence = (f"threshold 0: on the {n_unsure} least-sure items the large tier is right on {l_right}, "
                        f"the small tier on {s_right}{gain_note}")
        else:  # no evidence that escalating hurts: the unsure slice (or the best point) goes up
            best = fallback
            evidence = (f"escalates: on the {n_unsure} least-sure items the large tier is right on {l_right}, "
                        f"the small tier on {s_right} (no evidence for threshold 0)")
    else:
        evidence = f"on the {n_unsure} least-sure items: large right on {l_right}, small on {s_right}"
    # Items at the chosen point that escalate: the large tier's review threshold is chosen on those.
    escalated = invalid | below_threshold(conf, best.threshold)
    large = (np.asarray(large_conf, dtype=float)[escalated] if large_conf is not None
             else np.array([], dtype=float))
    large_t = review_threshold(large, review_below, max_review_rate)
    review = float(below_threshold(large, large_t).sum() / len(conf)) if len(conf) else 0.0
    point = replace(best, review_rate=review, target=target, unsure_items=n_unsure, unsure_small_right=s_right,
                    unsure_large_right=l_right, evidence=evidence)
    return Thresholds(small=round(best.threshold, 6), large=round(large_t, 6)), point
