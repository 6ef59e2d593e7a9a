"""What a promoted version passes on to the next fine-tuning run: its tasks, rehearsal and held-out examples."""

from __future__ import annotations

from processors.datasets import LabelledExample
from processors.demonstrations import SHOT_CHARS, match_id, write_demonstrations
from processors.finetune import job
from processors.finetune.job import Inherited, inherit, listed_tasks, sample_per_task, tasks_without_options
from processors.finetune.pairs import Pair
from schemas.config import LabelTask
from schemas.versions import ModelVersion, promote, write_version

INTENT = LabelTask(name="intent", labels=["cancel_order", "track_order"], question="What?", sources=["tickets"])
LONG = "my order never came " * 40  # longer than a stored demonstration's text


def _ticket(text: str, **labels: str) -> LabelledExample:
    return LabelledExample(text, text, "tickets", labels, {"order_id": None}, fields_complete=True)


def _promoted(registry, config, adapter: str | None = "adapter.gguf", without_options: tuple[str, ...] = ()) -> None:
    version = ModelVersion(id="ft-old", tasks=[*config.tasks, INTENT], demonstrations="demonstrations.jsonl",
                           heldout="heldout.jsonl", adapter=adapter, tasks_without_options=list(without_options))
    folder = write_version(registry, version)
    trained = [_ticket(f"cancel order {i}", intent="cancel_order") for i in range(6)]
    trained.append(_ticket("track it", intent="track_order"))  # also held out (an older version's sample had both)
    trained += [_ticket(f"where is order {i}", intent="track_order", category="DELIVERY") for i in range(6)]
    trained.append(_ticket(LONG, intent="track_order"))  # stored cut, as the shipped version's 400 characters
    write_demonstrations(trained, folder / "demonstrations.jsonl", {"tickets": ["order_id"]}, max_chars=SHOT_CHARS)
    held = [_ticket("please cancel my order", intent="cancel_order"), _ticket("track it", intent="track_order"),
            _ticket("the new data has this one too", intent="track_order"),
            _ticket(LONG + " again", intent="cancel_order")]
    write_demonstrations(held, folder / "heldout.jsonl", {"tickets": ["order_id"]}, limit=None)
    promote(registry, "ft-old", "test")


def test_without_a_promoted_version_nothing_is_inherited(tmp_path, config):
    assert inherit(str(tmp_path / "models"), config, [_ticket("a")], [], 10).version is None


def test_the_promoted_version_passes_on_its_learned_tasks_rehearsal_and_held_out_examples(tmp_path, config,
                                                                                          monkeypatch):
    registry = str(tmp_path / "models")
    _promoted(registry, config)
    new = [_ticket(f"team ticket {i}", team="billing") for i in range(3)]
    new.append(_ticket("the new data has this one too", team="billing", intent="refund"))
    held = [_ticket("cancel order 3", team="ops")]  # also in the old version's training sample
    got = inherit(registry, config, new, held, eval_limit=10)
    assert got.version is not None and got.version.id == "ft-old"
    # configured tasks stay the configuration's; the inherited one grows by a label the new data adds
    assert [t.name for t in got.tasks] == ["intent"] and got.tasks[0].labels == ["cancel_order", "track_order",
                                                                                 "refund"]
    assert got.learned == ["category", "intent"]  # what its training sample labels: each must be judged
    assert match_id("cancel order 3") in got.seen  # a new held-out example it trained on: the job leaves it out
    # at least REHEARSAL_PER_LABEL per label of its finest task in each task's share (here 4 x 2 x 2 = 16): so all
    # 14 stored but the three that judge: "cancel order 3", "track it" and the long one, whose first SHOT_CHARS
    # characters are those of an inherited held-out text (matched as the same example)
    assert len(got.rehearsal) == 11
    monkeypatch.setattr(job, "REHEARSAL_PER_LABEL", 1)  # floor 4: one old training example per new one rules
    assert len(inherit(registry, config, new, held, eval_limit=10).rehearsal) == 4
    assert len(inherit(registry, config, new[:2], held, eval_limit=10).rehearsal) == 4
    many = inherit(registry, config, new + [_ticket(f"more {i}", team="ops") for i in range(20)], held, 10)
    assert len(many.rehearsal) == 11  # never more than is stored
    # from the base model the adapter learns the old tasks from nothing: every stored example that does not judge
    assert len(inherit(registry, config, new[:2], held, eval_limit=10, from_base=True).rehearsal) == 11
    assert not {"cancel order 3", "track it", LONG[:SHOT_CHARS]} & {ex.text for ex in many.rehearsal}
    assert {ex.labels["intent"] for ex in got.rehearsal} == {"cancel_order", "track_order"}  # both kept in mix
    assert all(ex.field_value("order_id") == (True, None) for ex in got.rehearsal)  # known fields come along
    # its held-out examples judge the candidate too, except one the candidate now trains on
    assert sorted(ex.text for ex in got.heldout) == sorted([LONG + " again", "please cancel my order", "track it"])
    assert len(inherit(registry, config, new, held, eval_limit=1).heldout) == 3  # at least 80 per task: all 3
    monkeypatch.setattr(job, "MIN_INHERITED_PER_TASK", 0)  # without that floor, about eval_limit
    assert len(inherit(registry, config, new, held, eval_limit=1).heldout) == 1
    # a stored text is cut: its whole text in the new data is the same example (not held out, not rehearsed)
    whole = inherit(registry, config, [_ticket(LONG + " again")], [_ticket(LONG)], eval_limit=10)
    assert LONG + " again" not in {ex.text for ex in whole.heldout}
    assert not [ex for ex in whole.rehearsal if ex.text.startswith("my order never came")]


def test_a_task_the_promoted_adapter_learned_with_its_option_list_keeps_the_list(tmp_path, config):
    registry = str(tmp_path / "models")
    _promoted(registry, config, without_options=("intent",))  # category learned with its list, intent without
    got = inherit(registry, config, [_ticket("a", team="x")], [], 10)
    assert got.learned == ["category", "intent"]
    # category keeps the list; intent, and the new task "team" (not learned by the old adapter), go without
    assert listed_tasks(got) == {"category"}
    assert listed_tasks(Inherited()) == set()  # no promoted version: every task without
    # recorded: the tasks with pairs, minus the listed; and intent, learned without by the adapter trained from,
    # even when this run's rehearsal sample holds no intent example
    pairs = [Pair("p", " x", "team", "a"), Pair("p", " y", "category", "b"), Pair("p", ' "1",', "field:order_id", "c")]
    tasks = [*config.tasks, INTENT, LabelTask(name="team", labels=["x", "y"], question="Team?", sources=["tickets"])]
    assert tasks_without_options(pairs, tasks, {"category"}, got.version) == ["intent", "team"]
    assert tasks_without_options(pairs, tasks, set(), None) == ["category", "team"]  # from the base model


def test_a_version_without_an_adapter_learned_nothing_it_must_be_judged_on(tmp_path, config):
    registry = str(tmp_path / "models")
    _promoted(registry, config, adapter=None)  # e.g. calibration stored for the base model
    assert inherit(registry, config, [_ticket("a", team="x")], [], 10).learned == []


def test_every_task_keeps_a_share_when_one_task_has_most_examples():
    examples = [_ticket(f"s {i}", sentiment="positive" if i % 2 else "negative") for i in range(90)]
    examples += [_ticket(f"i {i}", intent="track_order" if i % 2 else "cancel_order") for i in range(10)]
    picked = sample_per_task(examples, 20, seed=0)
    assert len(picked) == 20 and sum("intent" in ex.labels for ex in picked) == 10  # not 2, its share by size
    assert sample_per_task(examples, 200) == examples
    # invoices with known fields and no label get a share too (their extraction is rehearsed and judged)
    invoices = [LabelledExample(f"inv {i}", f"inv {i}", "pdf", {}, {"total": "4.11"}) for i in range(50)]
    assert sum(ex.source == "pdf" for ex in sample_per_task(examples + invoices, 30)) == 10
    # the finest task takes its share first: tickets that carry category and intent are stratified by intent
    both = [_ticket(f"b {i}", category="ORDER" if i % 2 else "REFUND", intent=f"intent_{i % 5}") for i in range(50)]
    picked = sample_per_task(both + examples, 20)
    assert {ex.labels["intent"] for ex in picked if "intent" in ex.labels and ex.text.startswith("b ")} >= {
        f"intent_{i}" for i in range(5)}


def test_a_rerun_on_the_same_file_rehearses_old_examples_not_copies_of_the_new_ones(tmp_path, config):
    registry = str(tmp_path / "models")
    _promoted(registry, config)
    again = [_ticket(f"cancel order {i}", intent="cancel_order") for i in range(6)]  # its own training rows
    got = inherit(registry, config, again, [], eval_limit=10)
    assert not {ex.text for ex in got.rehearsal} & {ex.text for ex in again}
    # a label the new data adds to an inherited task, from a source the task does not run on, is not added
    other = [LabelledExample("p", "invoice text", "pdf", {"intent": "pay_invoice"})]
    assert inherit(registry, config, other, [], 10).tasks[0].labels == ["cancel_order", "track_order"]


def _gguf_adapter(path, rank: int, modules: list[str], alpha: float = 16.0) -> None:
    """A LoRA adapter file as export_gguf_lora writes one (two tensors per module), without a model."""
    import gguf
    import numpy as np

    from processors.finetune.export import GGUF_NAMES

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch="gemma3")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for module in modules:
        writer.add_tensor(f"blk.0.{GGUF_NAMES[module]}.weight.lora_a", np.zeros((rank, 4), dtype=np.float32))
        writer.add_tensor(f"blk.0.{GGUF_NAMES[module]}.weight.lora_b", np.zeros((4, rank), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_training_starts_from_the_promoted_adapter_only_when_it_fits(tmp_path, config):
    from dataclasses import replace

    import pytest

    from processors.finetune.job import start_adapter
    from processors.finetune.train import TrainOptions

    registry, options = str(tmp_path / "models"), TrainOptions()
    file = tmp_path / "models" / "versions" / "ft-old" / "adapter.gguf"
    fits = ModelVersion(id="ft-old", adapter="adapter.gguf", base_model=config.small.model)
    with pytest.raises(FileNotFoundError, match="--from-base"):  # a promoted version without its adapter
        start_adapter(registry, fits, config, options)
    _gguf_adapter(file, options.rank, list(reversed(options.target_modules)))  # module order does not matter
    assert start_adapter(registry, fits, config, options) == (str(file), "ft-old")
    assert start_adapter(registry, None, config, options)[0] is None
    assert start_adapter(registry, fits.model_copy(update={"adapter": None}), config, options)[0] is None
    other_base = start_adapter(registry, fits.model_copy(update={"base_model": "qwen2.5-1.5b"}), config, options)
    assert other_base[0] is None and "qwen2.5-1.5b" in other_base[1]
    for other in (replace(options, rank=16), replace(options, alpha=32.0), replace(options, target_modules=["q_proj"])):
        path, why = start_adapter(registry, fits, config, other)
        assert path is None and why.startswith("base model (ft-old's adapter has alpha, rank and modules 16.0, 8,")
