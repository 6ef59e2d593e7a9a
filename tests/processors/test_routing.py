from hypothesis import given
from hypothesis import strategies as st

from processors.routing import overall_tier, route
from schemas.config import Thresholds
from schemas.records import FieldPrediction, LabelPrediction

TH = {"category": Thresholds(small=0.6, large=0.5), "fields": Thresholds(small=0.5, large=0.4)}


def _label(conf: float, valid: bool = True, tier="small") -> LabelPrediction:
    return LabelPrediction("category", "ORDER" if valid else None, conf, {}, tier, valid=valid)


def _field(conf: float, problems=()) -> FieldPrediction:
    return FieldPrediction("date", "x", "x", conf, 1, 0, 1, not problems, "small", list(problems))


def test_confident_valid_items_pass():
    d = route({"category": _label(0.9)}, {"date": _field(0.9)}, TH, "small")
    assert d.passed == ("category", "field:date") and d.failed == () and d.reasons == ()


def test_low_confidence_invalid_and_failed_validators_fail_with_reasons():
    d = route({"category": _label(0.3), "sentiment": _label(0.0, valid=False)},
              {"date": _field(0.9, ["not_in_source"])}, TH, "small")
    assert set(d.failed) == {"category", "sentiment", "field:date"}
    assert "category:low_confidence(0.30<0.60)" in d.reasons
    assert "sentiment:invalid_output" in d.reasons and "field:date:not_in_source" in d.reasons


def test_large_tier_uses_its_own_threshold():
    assert route({"category": _label(0.55, tier="large")}, {}, TH, "large").passed == ("category",)
    assert route({"category": _label(0.55)}, {}, TH, "small").failed == ("category",)


def test_a_source_with_its_own_field_thresholds_is_routed_by_them_the_others_by_the_shared_ones():
    th = {**TH, "fields:pdf": Thresholds(small=0.3, large=0.2)}
    assert route({}, {"date": _field(0.4)}, th, "small", "pdf").passed == ("field:date",)
    assert route({}, {"date": _field(0.4)}, th, "small", "tickets").reasons == (
        "field:date:low_confidence(0.40<0.50)",)
    assert route({}, {"date": _field(0.4)}, th, "small").failed == ("field:date",)  # no source: the shared ones
    assert route({}, {"date": _field(0.25)}, th, "large", "pdf").passed == ("field:date",)
    # labels are not fields: a 'fields:<source>' key never routes them
    assert route({"category": _label(0.4)}, {}, th, "small", "pdf").failed == ("category",)


def test_overall_tier_is_the_highest():
    assert overall_tier({"a": "small", "b": "review", "c": "large"}) == "review"
    assert overall_tier({}) == "small"


@given(st.floats(min_value=0, max_value=1), st.booleans(), st.floats(min_value=0, max_value=1),
       st.lists(st.sampled_from(["not_in_source", "unparseable_date"]), max_size=2))
def test_route_is_total_and_partitions_items(conf, valid, fconf, problems):
    d = route({"category": _label(conf, valid)}, {"date": _field(fconf, problems)}, TH, "small")
    assert sorted(d.passed + d.failed) == ["category", "field:date"]
    assert len(d.reasons) == len(d.failed)
