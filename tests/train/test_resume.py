"""The batch plan of a resume on another process count: kept, changed on request, refused otherwise."""

import pytest

from renderocc.checkpoint import save_checkpoint
from renderocc.config import get_preset
from renderocc.train_utils.resume import BatchPlan, GlobalBatchError, plan_batch

CHECKPOINT = "RUN/checkpoints/step-00000010"


def saved(world_size: int, batch_size: int, step: int = 10, **extra) -> dict:
    return {"step": step, "world_size": world_size, "batch_size": batch_size, **extra}


def test_a_fresh_run_takes_the_preset_or_the_asked_batch():
    assert plan_batch(None, None, 2, 4, seed=5) == BatchPlan(2, 4, seed=5, samples_seen=0, schedule_batch=8)
    assert plan_batch(None, None, 2, 4, batch_size=3).global_batch == 12
    with pytest.raises(ValueError, match="are for --resume"):
        plan_batch(None, None, 2, 4, keep_global_batch=True)
    with pytest.raises(ValueError, match="drop --batch-size"):
        plan_batch(saved(2, 2), CHECKPOINT, 2, 1, batch_size=4, keep_global_batch=True)


def test_another_process_count_is_refused_with_what_to_pass():
    with pytest.raises(GlobalBatchError) as err:
        plan_batch(saved(2, 1), CHECKPOINT, 1, 1)  # trained on 2 GPUs x 1, resumed on one
    message = str(err.value)
    assert f"checkpoint {CHECKPOINT} was trained with 2 process(es) x batch 1 = global batch 2" in message
    assert "1 x 1 = 1 samples per step" in message
    assert "--keep-global-batch to train with batch 2 per process" in message
    assert "--change-global-batch to continue with global batch 1" in message
    with pytest.raises(GlobalBatchError, match="--change-global-batch to continue with global batch 4"):
        plan_batch(saved(1, 2), CHECKPOINT, 2, 2)  # the other way: 1 x 2 resumed on 2 x 2
    with pytest.raises(GlobalBatchError, match="a process count that divides 3 with --keep-global-batch"):
        plan_batch(saved(1, 3), CHECKPOINT, 3, 2)
    # the same global batch split another way needs no flag
    assert plan_batch(saved(2, 1), CHECKPOINT, 2, 1).batch_size == 2


def test_keeping_the_global_batch_splits_it_over_the_new_processes():
    down = plan_batch(saved(2, 2, step=10), CHECKPOINT, 2, 1, keep_global_batch=True)
    assert (down.batch_size, down.global_batch, down.samples_seen, down.schedule_batch) == (4, 4, 40, 4)
    assert down.change_note(10, 100) is None
    up = plan_batch(saved(1, 4, step=10), CHECKPOINT, 2, 4, keep_global_batch=True)
    assert (up.batch_size, up.global_batch) == (1, 4)
    with pytest.raises(GlobalBatchError, match="3 processes cannot share evenly; use a process count"):
        plan_batch(saved(2, 2), CHECKPOINT, 2, 3, keep_global_batch=True)


def test_a_changed_global_batch_continues_the_stream_and_keeps_the_schedule_batch():
    plan = plan_batch(saved(2, 2, step=10), CHECKPOINT, 2, 1, change_global_batch=True)
    assert (plan.global_batch, plan.samples_seen, plan.schedule_batch) == (2, 40, 4)
    note = plan.change_note(10, 100)
    assert "global batch 2 (1 x 2) from step 10 on, 4 before" in note
    assert "continues at sample 40" in note and "keeps its 100 steps" in note
    assert "--max-iters 190" in note  # 90 steps of 4 samples are 180 steps of 2
    fields = plan.checkpoint_fields(steps_done=5)
    assert fields == {"world_size": 1, "batch_size": 2, "seed": 0, "samples_seen": 50, "schedule_batch": 4}
    # a second resume reads what the first one wrote: the stream position and the schedule's batch carry on
    again = plan_batch(saved(**fields, step=15), CHECKPOINT, 2, 1)
    assert (again.samples_seen, again.schedule_batch, again.change_note(15, 100)) == (50, 4, None)


def test_another_seed_is_refused():
    with pytest.raises(ValueError, match="trained with --seed 3, which fixes its data order.*pass --seed 3"):
        plan_batch(saved(1, 2, seed=3), CHECKPOINT, 2, 1)
    assert plan_batch(saved(1, 2, seed=3), CHECKPOINT, 2, 1, seed=3).seed == 3


def test_a_checkpoint_without_the_batch_fields_reads_its_preset(tmp_path):
    preset = get_preset("demo").replace(train={"batch_size": 3})
    path = save_checkpoint(tmp_path, 6, {}, {}, {"world_size": 2}, preset)
    state = {"step": 6, "world_size": 2}  # what checkpoints held before the batch was recorded
    with pytest.raises(GlobalBatchError, match="2 process\\(es\\) x batch 3 = global batch 6"):
        plan_batch(state, path, 3, 1)
    plan = plan_batch(state, path, 3, 3, keep_global_batch=True)
    assert (plan.batch_size, plan.samples_seen, plan.schedule_batch) == (2, 36, 6)
