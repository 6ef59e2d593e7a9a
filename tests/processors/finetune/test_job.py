"""What a promoted version passes on to the next fine-tuning run: its tasks, rehearsal and held-out examples."""

from __future__ import annotations

from processors.datasets import LabelledExample
from processors.demonstrations import write_demonstrations
from processors.finetune.job import inherit
from schemas.config import LabelTask
from schemas.versions import ModelVersion, promote, write_version

INTENT = LabelTask(name="intent", labels=["cancel_order", "track_order"], question="What?", sources=["tickets"])


def _ticket(text: str, **labels: str) -> LabelledExample:
    return LabelledExample(text, text, "tickets", labels, {"order_id": None}, fields_complete=True)


def _promoted(registry, config) -> None:
    version = ModelVersion(id="ft-old", tasks=[*config.tasks, INTENT], demonstrations="demonstrations.jsonl",
                           heldout="heldout.jsonl")
    folder = write_version(registry, version)
    trained = [_ticket(f"cancel order {i}", intent="cancel_order") for i in range(6)]
    trained.append(_ticket("track it", intent="track_order"))  # also held out (an older version's sample had both)
    trained += [_ticket(f"where is order {i}", intent="track_order", category="DELIVERY") for i in range(6)]
    write_demonstrations(trained, folder / "demonstrations.jsonl", {"tickets": ["order_id"]})
    held = [_ticket("please cancel my order", intent="cancel_order"), _ticket("track it", intent="track_order"),
            _ticket("the new data has this one too", intent="track_order")]
    write_demonstrations(held, folder / "heldout.jsonl", {"tickets": ["order_id"]}, limit=None)
    promote(registry, "ft-old", "test")


def test_without_a_promoted_version_nothing_is_inherited(tmp_path, config):
    assert inherit(str(tmp_path / "models"), config, [_ticket("a")], [], 10).version is None


def test_the_promoted_version_passes_on_its_learned_tasks_rehearsal_and_held_out_examples(tmp_path, config):
    registry = str(tmp_path / "models")
    _promoted(registry, config)
    new = [_ticket(f"team ticket {i}", team="billing") for i in range(3)]
    new.append(_ticket("the new data has this one too", team="billing"))
    held = [_ticket("cancel order 3", team="ops")]  # also in the old version's training sample
    got = inherit(registry, config, new, held, eval_limit=10)
    assert got.version is not None and got.version.id == "ft-old"
    assert [t.name for t in got.tasks] == ["intent"]  # configured tasks stay the configuration's
    # one old training example per new one, never one the new held-out data judges
    assert len(got.rehearsal) == 4
    many = inherit(registry, config, new + [_ticket(f"more {i}", team="ops") for i in range(20)], held, 10)
    assert len(many.rehearsal) == 11  # all 13 stored but the two that judge: "cancel order 3" and "track it"
    assert not {"cancel order 3", "track it"} & {ex.text for ex in many.rehearsal}
    assert {ex.labels["intent"] for ex in got.rehearsal} == {"cancel_order", "track_order"}  # both kept in mix
    assert all(ex.field_value("order_id") == (True, None) for ex in got.rehearsal)  # known fields come along
    # its held-out examples judge the candidate too, except one the candidate now trains on
    assert sorted(ex.text for ex in got.heldout) == ["please cancel my order", "track it"]
    assert len(inherit(registry, config, new, held, eval_limit=1).heldout) == 1
