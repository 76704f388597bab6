"""A Tune trainable with fixed learning curves (no images, no training) and a runner around run_study.

The whole search machinery runs for real — Ray Tune, the Optuna searcher, the scheduler, the recorder,
resume — while each candidate reports a learning curve fixed by its kernels, so tests can say which
trials a rule must stop. Every execution of a (candidate, replicate) appends a line to
``$CURVES_LOG``, so tests can count what was trained.

Run as a script: ``python tests/curves.py STUDY OUT [--resume] [--trials N] [--tensorboard]``.
"""
from __future__ import annotations

import json
import os
import sys
import time


def curve(kernels: list[int], epochs: int, replicate: int = 0) -> list[float]:
    """Accuracy per epoch: small kernels learn fast and plateau low, large ones start lower, end higher."""
    k = sum(kernels) / len(kernels)
    final = 0.40 + 0.01 * k + 0.002 * replicate
    start = 0.30 - 0.004 * k
    return [round(start + (final - start) * (e + 1) / epochs, 4) for e in range(epochs)]


BASELINE_FINAL = {"timm:lcnet_050": 0.40, "timm:mobilenetv3_small_050": 0.60}  # final accuracy of baselines


def curve_trainable(config: dict) -> None:
    from ray import tune

    from lkscale.search.progress import write_progress

    base = {"epoch": 0, "val_acc": 0.0, "latency_ms": float(config.get("latency_ms") or 0.0), "node": "curves",
            "infeasible": False, "failed": False, "error": "", "replicate": int(config.get("replicate", 0)),
            "val_n": 1000}
    if config.get("infeasible"):
        tune.report({**base, "infeasible": True, "error": config["infeasible"]})
        return
    epochs = int(config["proxy"]["epochs"])
    log = os.environ.get("CURVES_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{config['name']} {base['replicate']}\n")
    if config.get("role") == "baseline":  # a study's baseline: a fixed curve of its own (BASELINE_FINAL)
        final = BASELINE_FINAL.get(config["name"], 0.5) + 0.002 * base["replicate"]
        accs = [round(final * (e + 1) / epochs, 4) for e in range(epochs)]
    else:
        accs = curve([s["kernel"] for s in json.loads(config["spec"])["stages"]], epochs, base["replicate"])
    every = config["proxy"].get("val_every_epoch", True)  # False: as the real trainable, Tune hears only the end
    trial_id = tune.get_context().get_trial_id()
    write_progress(config.get("run_dir", ""), trial_id, 0, 0.0)
    for e, acc in enumerate(accs, 1):
        time.sleep(float(os.environ.get("CURVES_SLEEP", "0")))
        write_progress(config.get("run_dir", ""), trial_id, e, 0.1 * e)
        if every or e == epochs:
            tune.report({**base, "epoch": e, "val_acc": acc, "val_acc_epochs": json.dumps(accs[:e] if every else [acc]),
                         "seconds": 0.1 * e})


def main(argv: list[str]) -> int:
    import ray.cloudpickle

    import lkscale  # noqa: F401
    from lkscale.search import run_study

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    trials = int(argv[argv.index("--trials") + 1]) if "--trials" in argv else None
    run_study(argv[0], output=argv[1], resume="--resume" in argv, trials=trials, trainable=curve_trainable,
              progress=lambda m: print(m, file=sys.stderr, flush=True), tensorboard="--tensorboard" in argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
