"""The search's ledger (what is owed: replicates, confirmation runs) and its progress line, without Ray."""
import io

from lkscale.rundir import Trial
from lkscale.search.ledger import Ledger
from lkscale.search.progress import Progress


def test_replicates_are_queued_after_replicate_0_and_optuna_hears_once():
    led = Ledger(trials=2, replicates=3)
    led.register("a", 0, {"name": "a", "spec": "{}"}, "t0")
    assert led.next_job("t1") is None  # nothing owed before replicate 0 finishes
    c = led.finish("t0", "a", "complete", 0.50)
    assert not led.ready_to_tell(c) and [(j.name, j.replicate) for j in led.jobs] == [("a", 1), ("a", 2)]
    j1, j2 = led.next_job("t1"), led.next_job("t2")
    led.finish("t1", None, "complete", 0.52)
    assert not led.ready_to_tell(c)
    led.finish("t2", None, "failed", None)  # a failed replicate: told with what there is
    assert led.ready_to_tell(c) and c.results == {0: 0.50, 1: 0.52}
    assert (j1.replicate, j2.replicate) == (1, 2) and led.idle() and not led.budget_spent()


def test_pruned_candidate_owes_nothing_and_budget_counts_distinct_architectures():
    led = Ledger(trials=2, replicates=3)
    led.register("a", 0, {"name": "a"}, "t0")
    c = led.finish("t0", "a", "pruned", None)
    assert led.ready_to_tell(c) and not led.jobs
    assert led.seen("a") is c and not led.budget_spent()
    led.register("b", 1, {"name": "b"}, "t1")
    assert led.budget_spent()


def test_resumed_ledger_knows_every_architecture_and_what_is_still_owed():
    rows = [Trial({"name": "a", "number": 0, "replicate": 0, "state": "complete", "val_acc": 0.5, "spec": "{}"}),
            Trial({"name": "a", "number": 0, "replicate": 1, "state": "complete", "val_acc": 0.6, "spec": "{}"}),
            Trial({"name": "b", "number": 1, "replicate": 0, "state": "pruned", "val_acc": 0.3, "spec": "{}"}),
            Trial({"name": "c", "number": 2, "replicate": 0, "state": "running", "val_acc": None, "spec": "{}"})]
    led = Ledger.from_trials(rows, trials=5, replicates=3)
    assert set(led.candidates) == {"a", "b"}  # the interrupted one is re-queued through Optuna, not here
    assert [(j.name, j.replicate) for j in led.jobs] == [("a", 2)]
    assert led.distinct_finished() == 2 and led.by_number == {0: "a", 1: "b"}


def test_progress_is_one_live_line_on_a_terminal_and_plain_lines_in_logs():
    lines, stream = [], io.StringIO()
    p = Progress(lines.append, total_trials=4, epochs=2, concurrency=2, ref_latency=10.0, live=False, stream=stream)
    rows = [{"state": "complete", "val_acc": 0.5, "latency_ms": 2.0, "epochs_done": 2, "seconds": 20.0},
            {"state": "pruned", "val_acc": 0.3, "latency_ms": 3.0, "epochs_done": 1, "seconds": 10.0}]
    p.update(rows)
    assert stream.getvalue() == ""  # not a terminal: no live redraws
    p.trial_done({**rows[0], "number": 0, "name": "a"}, rows)
    assert "2/4 trials: complete 1" in lines[-1] and "pruned 1" in lines[-1] and "front 1 (HV 4)" in lines[-1]
    # 30 s over 3 trial-epochs -> 10 s each; 2 trials x 2 epochs left, 2 at a time -> ~20 s
    assert "~0m20s left" in lines[-1]
    live = Progress(lines.append, 4, 2, 2, 10.0, live=True, stream=stream)
    live.update(rows)
    assert stream.getvalue().startswith("\r\033[K2/4 trials")
    # adaptive replicates queued after the plan: the count grows past it and says so ("39/30" before)
    more = rows + [{"state": "complete", "val_acc": 0.4, "latency_ms": 2.5, "epochs_done": 2, "seconds": 20.0}] * 4
    assert live.summary(more).startswith("6/6 trials (+2 added after the plan): complete 5")


def test_common_random_numbers_same_subset_batch_order_and_init_across_candidates():
    import hashlib

    import torch

    from lkscale.config import DataConfig, TrainConfig
    from lkscale.data import load_splits
    from lkscale.search.trainable import build_seeded, replicate_configs
    from lkscale.spec import ArchSpec
    from lkscale.train import train_model

    def spec(kernels, block="replk"):
        return ArchSpec.from_dict({"stem": {"stride": 2}, "stages": [
            {"block": block, "depth": 1, "width": w, "kernel": k} for w, k in zip((8, 16, 16), kernels)]})

    def batches(s, replicate):
        data, proxy = replicate_configs(DataConfig(dataset="synthetic", train_per_class=12, val_per_class=2),
                                        TrainConfig(epochs=1, batch_size=8, bn_recalibrate_batches=1), replicate, 1)
        splits = load_splits(data)
        model = build_seeded(s, proxy.seed, splits.num_classes, splits.in_chans)
        seen = []
        model.register_forward_pre_hook(
            lambda m, args: seen.append(hashlib.sha1(args[0].detach().float().numpy().tobytes()).hexdigest())
            if m.training else None)
        train_model(model, splits, proxy)
        steps = len(splits.train) // proxy.batch_size  # the training steps come first (then BN recalibration)
        return seen[:steps], splits.train.y.tolist()

    a0, ya0 = batches(spec([3, 3, 3]), 0)
    b0, yb0 = batches(spec([7, 5, 3], "convnext"), 0)  # another candidate, same replicate
    a1, ya1 = batches(spec([3, 3, 3]), 1)
    assert a0 == b0 and ya0 == yb0  # same subset, same batches in the same order
    assert a0 != a1  # another replicate draws other batches
    w0 = build_seeded(spec([3, 3, 3]), 0, 10, 3).state_dict()
    w0b = build_seeded(spec([3, 3, 3]), 0, 10, 3).state_dict()
    w1 = build_seeded(spec([3, 3, 3]), 1, 10, 3).state_dict()
    assert all(torch.equal(w0[k], w0b[k]) for k in w0) and not all(torch.equal(w0[k], w1[k]) for k in w0)
