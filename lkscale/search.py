"""Run a study: Ray Tune schedules proxy training, Optuna samples multi-objective (accuracy up, latency down).

The path of one candidate:
1. ``Objective`` (Optuna define-by-run, in the driver) samples parameters, builds the ArchSpec, and
   costs it (params, FLOPs, deploy latency, effective kernels; cached by spec name in ``costs.json``).
   Over budget: ``trial.set_constraint`` tells the sampler, and the Tune trial reports once and stops
   without a training step.
2. ``train_candidate`` (a Tune function trainable, in a worker) trains the candidate, reporting after
   every epoch; the scheduler (``lkscale.pruning``) may stop it between epochs.
3. ``Recorder`` (a Tune callback) keeps ``trials.csv`` current and marks scheduler-stopped trials as
   pruned; ``StudySearch`` (OptunaSearch) records them in Optuna as PRUNED (never on the front),
   failed ones as FAIL, infeasible ones as COMPLETE with a violated constraint.

Run folder: ``study.yaml``, ``optuna.journal`` (Optuna JournalStorage; optuna-dashboard opens it),
``tune*/`` (Ray Tune experiments: the first run and each resume), ``trials.csv``, ``costs.json``,
``weights/<name>.safetensors``, ``summary.json``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tarfile
import tempfile
import time
import traceback
from typing import Any, Callable

import optuna

from lkscale.space import grid as space_grid
from lkscale.space import suggest
from lkscale.study import Study, StudyError, load_study

log = logging.getLogger("lkscale.search")

CSV_COLUMNS = ["trial_id", "number", "name", "state", "blocks", "kernels", "depths", "widths", "dcn_groups",
               "reparam", "stem_stride", "params", "deploy_params", "flops", "latency_ms", "val_acc",
               "val_acc_epochs", "epochs_done", "epochs_budget", "seconds", "node", "error", "notes", "seed", "spec"]


# ------------------------------------------------------------------------------------------ costing
def budget_violations(cost: dict, budgets: dict) -> dict[str, float]:
    """Constraint values (> 0 means over budget, relative to the budget) for each set budget."""
    out = {}
    for key, field in (("max_params", "params"), ("max_flops", "flops"), ("max_latency_ms", "latency_ms")):
        limit = budgets.get(key)
        if limit:
            out[field] = (cost[field] - limit) / limit
    return out


class Objective:
    """Optuna define-by-run function: sample, build, cost. Picklable (Tune checkpoints the searcher)."""

    def __init__(self, study: Study, run_dir: str):
        self.study = study
        self.run_dir = run_dir
        self.costs_path = os.path.join(run_dir, "costs.json")
        self.costs: dict[str, dict] = {}  # spec name -> costs
        self.latency: dict[str, dict] = {}  # deploy-form name -> latency (re-param variants share a deploy form)
        if os.path.isfile(self.costs_path):
            with open(self.costs_path) as f:
                saved = json.load(f)
            self.costs, self.latency = saved.get("costs", {}), saved.get("latency", {})

    def cost(self, spec) -> dict:
        if spec.name in self.costs:
            return self.costs[spec.name]
        from lkscale.cost import estimate

        b = self.study.budgets
        dname = spec.without_reparam().name
        lat = self.latency.get(dname)
        rep = estimate(spec, input_size=b["latency_input_size"], num_classes=10, batch_size=b["latency_batch_size"],
                       threads=b["latency_threads"], repeats=b["latency_repeats"], latency=lat is None)
        if lat is None:
            lat = self.latency[dname] = {"latency_ms": rep.latency_ms, "latency_p25_ms": rep.latency_p25_ms,
                                         "latency_p75_ms": rep.latency_p75_ms}
        c = {"params": rep.params, "deploy_params": rep.deploy_params, "flops": rep.flops, **lat, "deploy_name": dname,
             "effective_kernels": [list(s.effective_kernel) for s in rep.stages], "dead_params": rep.dead_params}
        self.costs[spec.name] = c
        _atomic_write(self.costs_path, json.dumps({"costs": self.costs, "latency": self.latency}, indent=1))
        return c

    def __call__(self, trial) -> dict:
        study = self.study
        cand = suggest(trial, study.space, study.data["input_size"])
        out: dict[str, Any] = {"number": trial.number, "notes": cand.notes, "infeasible": "", "spec": "", "name": ""}
        if cand.spec is None:
            trial.set_constraint("valid", 1.0)
            out["infeasible"] = cand.error
            out.update(params=0, deploy_params=0, flops=0, latency_ms=0.0)
            return out
        spec = cand.spec
        cost = self.cost(spec)
        over = budget_violations(cost, study.budgets)
        for key, v in over.items():
            trial.set_constraint(key, v)
        trial.set_user_attr("name", spec.name)
        trial.set_user_attr("spec", spec.to_json())
        for k in ("params", "flops", "latency_ms"):
            trial.set_user_attr(k, cost[k])
        bad = [k for k, v in over.items() if v > 0]
        if bad:
            out["infeasible"] = "over budget: " + ", ".join(
                f"{k} {cost[k]:.4g} > {study.budgets[_BUDGET_KEY[k]]:.4g}" for k in bad)
        out.update(spec=spec.to_json(), name=spec.name, params=cost["params"], deploy_params=cost["deploy_params"],
                   flops=cost["flops"], latency_ms=cost["latency_ms"])
        done = next((r for r in read_trials(self.run_dir) if r["name"] == spec.name and r["state"] == "complete"), None)
        if done and not bad:  # same function as a finished trial: reuse its result, never train it twice
            out["cached"] = {"val_acc": float(done["val_acc"]), "val_acc_epochs": done["val_acc_epochs"],
                             "epoch": int(float(done["epochs_done"])), "of": done["number"]}
            out["notes"] = out["notes"] + [f"same architecture as trial {done['number']}: result reused"]
        return out


_BUDGET_KEY = {"params": "max_params", "flops": "max_flops", "latency_ms": "max_latency_ms"}


# ------------------------------------------------------------------------------------------ trainable
def train_candidate(config: dict, data_stage: dict | None = None) -> None:
    """Tune function trainable: proxy-train one candidate, reporting after every epoch.

    ``data_stage`` (cluster runs, see :func:`data_stage_payload`): the dataset in Ray's object store, used
    on a node that cannot read the data root. The final weights are also reported as a Tune checkpoint,
    so they reach the driver through ``--storage`` when the run folder is not shared (cluster runs only:
    ``config["weights_checkpoint"]``; a local run writes them into the run folder alone, as before).
    """
    import torch
    from ray import tune

    from lkscale.data import DataConfig, load_splits
    from lkscale.model import build_model
    from lkscale.spec import ArchSpec
    from lkscale.train import TrainConfig, train_model

    node = _node_id()
    base = {"epoch": 0, "val_acc": 0.0, "latency_ms": float(config.get("latency_ms") or 0.0), "node": node,
            "infeasible": False, "failed": False, "error": ""}
    if config.get("infeasible"):
        tune.report({**base, "infeasible": True, "error": config["infeasible"]})
        return
    if config.get("cached"):
        c = config["cached"]
        tune.report({**base, "epoch": c["epoch"], "val_acc": c["val_acc"], "val_acc_epochs": c["val_acc_epochs"]})
        return
    threads = max(1, int(config["cpus_per_trial"]))
    torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS=1 in workers
    t0 = time.time()
    history: list[float] = []
    try:
        d, p = node_data(config["data"], data_stage), config["proxy"]
        splits = load_splits(DataConfig(dataset=d["dataset"], root=d["root"], train_per_class=d["train_per_class"],
                                        val_per_class=d["val_per_class"], test_per_class=0,
                                        input_size=d["input_size"], seed=p["seed"], augment=d["augment"]))
        spec = ArchSpec.from_json(config["spec"])
        model = build_model(spec, num_classes=splits.num_classes, in_chans=splits.in_chans)
        cfg = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], weight_decay=p["weight_decay"],
                          warmup_epochs=p["warmup_epochs"], label_smoothing=p["label_smoothing"],
                          clip_grad=p["clip_grad"] or None, threads=threads, seed=p["seed"], augment=d["augment"])

        def on_epoch(m: dict):
            history.append(float(m["val_acc"]))
            final = m["epoch"] >= p["epochs"]
            ckpt_dir = None
            if final and config.get("weights_checkpoint"):  # a cluster: also a checkpoint Tune persists to storage
                ckpt_dir = _weights_checkpoint(model, spec, splits, config["run_dir"])
            elif final:
                _save_weights(model, spec, splits, config["run_dir"])
            tune.report({**base, "epoch": m["epoch"], "val_acc": float(m["val_acc"]), "val_loss": float(m["val_loss"]),
                         "train_loss": float(m["train_loss"]), "epoch_seconds": float(m["epoch_seconds"]),
                         "images_per_s": float(m["images_per_s"]), "val_acc_epochs": json.dumps(history),
                         "seconds": time.time() - t0},
                        checkpoint=tune.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)
            if ckpt_dir:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
            return None

        result = train_model(model, splits, cfg, callback=on_epoch)
        if result.status == "nan":
            tune.report({**base, "epoch": result.epochs_done, "failed": True, "val_acc_epochs": json.dumps(history),
                         "error": result.message or "loss became NaN/inf", "seconds": time.time() - t0})
    except Exception as e:  # noqa: BLE001 - recorded as a failed trial; the study goes on
        msg = f"{type(e).__name__}: {e}"
        log.warning("trial failed: %s\n%s", msg, traceback.format_exc())
        tune.report({**base, "epoch": len(history), "failed": True, "error": msg[:500],
                     "val_acc_epochs": json.dumps(history), "seconds": time.time() - t0})


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # noqa: BLE001
        return os.uname().nodename


def _save_weights(model, spec, splits, run_dir: str) -> None:
    from safetensors.torch import save_file

    d = os.path.join(run_dir, "weights")
    os.makedirs(d, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = os.path.join(d, f".{spec.name}.{os.getpid()}.tmp")
    save_file(state, tmp, metadata={"spec": spec.to_json(), "num_classes": str(splits.num_classes),
                                    "in_chans": str(splits.in_chans), "classes": json.dumps(splits.classes),
                                    "mean": json.dumps([float(v) for v in splits.mean]),
                                    "std": json.dumps([float(v) for v in splits.std])})
    os.replace(tmp, os.path.join(d, f"{spec.name}.safetensors"))


def _weights_checkpoint(model, spec, splits, run_dir: str) -> str:
    """Write the weights into a fresh checkpoint folder (``weights/<name>.safetensors``) and, when this node
    sees the driver's run folder (one machine or a shared filesystem), into ``run_dir/weights`` too."""
    ckpt = tempfile.mkdtemp(prefix="lkscale-ckpt-")
    _save_weights(model, spec, splits, ckpt)
    if os.path.isdir(run_dir):
        _copy_weights(os.path.join(ckpt, "weights", f"{spec.name}.safetensors"), run_dir)
    return ckpt


def _copy_weights(src: str, run_dir: str) -> str:
    d = os.path.join(run_dir, "weights")
    os.makedirs(d, exist_ok=True)
    dest = os.path.join(d, os.path.basename(src))
    tmp = os.path.join(d, f".{os.path.basename(src)}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest


# ------------------------------------------------------------------------------------------ data staging
STAGE_MAX_BYTES = 4 << 30  # larger data roots are never shipped through the object store


def _stage_mode() -> str:
    """``LKSCALE_STAGE_DATA``: ``auto`` (default: stage on nodes that cannot read the data root), ``always``
    (stage everywhere: node-local copies instead of a slow shared filesystem), ``never``."""
    mode = os.environ.get("LKSCALE_STAGE_DATA", "auto").strip().lower() or "auto"
    if mode not in ("auto", "always", "never"):
        raise StudyError("LKSCALE_STAGE_DATA", f"{mode!r} unknown; allowed: auto, always, never")
    return mode


def data_stage_payload(data: dict) -> dict | None:
    """Driver side of data staging for cluster runs: put the study's dataset source (an archive's bytes, or
    a folder as an uncompressed tar) into Ray's object store once. Returns a small dict for the trials
    (an ObjectRef plus the source's path, size and mtime), or None when there is nothing to stage
    (synthetic data, ``LKSCALE_STAGE_DATA=never``, or a source over ``STAGE_MAX_BYTES``)."""
    import ray

    from lkscale.data import default_data_root

    if data.get("dataset") == "synthetic" or _stage_mode() == "never":
        return None
    src = os.path.abspath(os.path.expanduser(data.get("root") or default_data_root(data.get("dataset", "imagefolder"))))
    if os.path.isdir(src):
        files = [os.path.join(dp, f) for dp, _, fs in os.walk(src) for f in fs]
        size = sum(os.path.getsize(f) for f in files)
        mtime = max([os.stat(f).st_mtime_ns for f in files] + [os.stat(src).st_mtime_ns])
        kind = "dir"
    else:
        st = os.stat(src)
        size, mtime, kind = st.st_size, st.st_mtime_ns, "file"
    if size > STAGE_MAX_BYTES:
        log.warning("data root %s is %.1f GB: not staged through the object store; every node must read it "
                    "(shared filesystem or a copy at the same path)", src, size / 1e9)
        return None
    if kind == "file":
        with open(src, "rb") as f:
            payload = f.read()
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(src, arcname=os.path.basename(src))
        payload = buf.getvalue()
    return {"ref": ray.put(payload), "source": src, "name": os.path.basename(src), "kind": kind, "size": size,
            "mtime_ns": mtime}


def node_data(data: dict, stage: dict | None) -> dict:
    """Worker side: the study's ``data`` settings for this node. Without a stage payload, unchanged; when
    the data root is readable here (and ``LKSCALE_STAGE_DATA`` is not ``always``), the root as the driver
    resolved it; otherwise the source is fetched from the object store once per node into
    ``$LKSCALE_CACHE/staged/<key>/`` (under a file lock, renamed into place when complete) and the root
    points there. ``lkscale.data`` then decodes it once per node into the same cache."""
    if not stage:
        return data
    mode = _stage_mode()
    if mode == "never" or (mode == "auto" and os.path.exists(stage["source"])):
        return {**data, "root": stage["source"]}
    from filelock import FileLock

    from lkscale.data import cache_dir

    key = hashlib.sha256(f"{stage['source']}|{stage['size']}|{stage['mtime_ns']}".encode()).hexdigest()[:16]
    base = os.path.join(str(cache_dir()), "staged")
    final = os.path.join(base, key)
    dest = os.path.join(final, stage["name"])
    if not os.path.isfile(os.path.join(final, ".complete")):
        os.makedirs(base, exist_ok=True)
        with FileLock(final + ".lock"):
            if not os.path.isfile(os.path.join(final, ".complete")):
                import ray

                log.info("staging %s from the object store into %s", stage["source"], final)
                payload = ray.get(stage["ref"])
                tmp = tempfile.mkdtemp(prefix=key + ".tmp-", dir=base)
                try:
                    if stage["kind"] == "file":
                        with open(os.path.join(tmp, stage["name"]), "wb") as f:
                            f.write(payload)
                        os.utime(os.path.join(tmp, stage["name"]), ns=(stage["mtime_ns"], stage["mtime_ns"]))
                    else:
                        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tf:
                            tf.extractall(tmp, filter="data")
                    with open(os.path.join(tmp, ".complete"), "w") as f:
                        f.write(stage["source"] + "\n")
                    shutil.rmtree(final, ignore_errors=True)  # a stale, incomplete copy
                    os.replace(tmp, final)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return {**data, "root": dest}


# ------------------------------------------------------------------------------------------ recording
def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_trials(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "trials.csv")
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def trial_state(result: dict, epochs: int, error: bool = False) -> str:
    if error or result.get("failed"):
        return "failed"
    if result.get("infeasible"):
        return "infeasible"
    if result.get("pruned"):
        return "pruned"
    if int(result.get("epoch") or 0) >= epochs:
        return "complete"
    return "running"


def _make_callback_class():
    from ray.tune import Callback

    class Recorder(Callback):
        """Keeps trials.csv current and marks scheduler-stopped trials as pruned (in the result itself)."""

        def __init__(self, run_dir: str, epochs: int, seed: int, progress: Callable[[str], None] | None = None):
            self.run_dir, self.epochs, self.seed = run_dir, epochs, seed
            self.progress = progress
            self.rows: dict[str, dict] = {r["trial_id"]: r for r in read_trials(run_dir)}

        def __getstate__(self):  # the progress printer is the driver's; not part of the checkpoint
            d = dict(self.__dict__)
            d["progress"] = None
            return d

        def _row(self, trial, result: dict, state: str) -> dict:
            cfg = trial.config
            spec = json.loads(cfg["spec"]) if cfg.get("spec") else None
            row = self.rows.get(trial.trial_id, {})
            st = spec["stages"] if spec else []
            row.update({
                "trial_id": trial.trial_id, "number": cfg.get("number"), "name": cfg.get("name", ""), "state": state,
                "blocks": json.dumps([s["block"] for s in st]), "kernels": json.dumps([s["kernel"] for s in st]),
                "depths": json.dumps([s["depth"] for s in st]), "widths": json.dumps([s["width"] for s in st]),
                "dcn_groups": json.dumps([s.get("dcn_groups") for s in st]),
                "reparam": json.dumps([s.get("reparam", []) for s in st]),
                "stem_stride": spec["stem"]["stride"] if spec else "", "params": cfg.get("params"),
                "deploy_params": cfg.get("deploy_params"), "flops": cfg.get("flops"),
                "latency_ms": cfg.get("latency_ms"), "val_acc": result.get("val_acc", row.get("val_acc", "")),
                "val_acc_epochs": result.get("val_acc_epochs", row.get("val_acc_epochs", "[]")),
                "epochs_done": result.get("epoch", row.get("epochs_done", 0)), "epochs_budget": self.epochs,
                "seconds": round(float(result.get("seconds", 0.0) or 0.0), 2), "node": result.get("node", ""),
                "error": result.get("error", "") or cfg.get("infeasible", ""), "notes": "; ".join(cfg.get("notes", [])),
                "seed": self.seed, "spec": cfg.get("spec", ""),
            })
            self.rows[trial.trial_id] = row
            return row

        def _flush(self) -> None:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in sorted(self.rows.values(), key=lambda r: int(r.get("number") or 0)):
                w.writerow(r)
            _atomic_write(os.path.join(self.run_dir, "trials.csv"), buf.getvalue())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("done") and not result.get("infeasible") and not result.get("failed") \
                    and int(result.get("epoch") or 0) < self.epochs:
                result["pruned"] = True  # stopped by the scheduler: the searcher records PRUNED
            self._row(trial, result, trial_state(result, self.epochs))
            self._flush()

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = dict(trial.last_result or {})
            row = self._row(trial, result, trial_state(result, self.epochs))
            self._flush()
            self._say(row)

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            """The final weights of a trial, persisted by Tune to storage: copied into ``run_dir/weights`` when
            the trial's node could not write there (no shared filesystem)."""
            name = trial.config.get("name")
            if not name or os.path.isfile(os.path.join(self.run_dir, "weights", f"{name}.safetensors")):
                return
            try:
                with checkpoint.as_directory() as d:
                    src = os.path.join(d, "weights", f"{name}.safetensors")
                    if os.path.isfile(src):
                        _copy_weights(src, self.run_dir)
            except Exception as e:  # noqa: BLE001 - the row still says complete; export reports missing weights
                log.warning("could not copy the weights of %s from its checkpoint: %s", name, e)

        def on_trial_error(self, iteration, trials, trial, **info):
            result = dict(trial.last_result or {})
            err = ""
            if trial.error_file and os.path.isfile(trial.error_file):
                with open(trial.error_file, errors="replace") as f:
                    lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
                err = lines[-1][:300] if lines else ""
            result["error"] = err or "trial process failed"
            row = self._row(trial, result, "failed")
            self._flush()
            self._say(row)

        def _say(self, row: dict) -> None:
            if not self.progress:
                return
            counts: dict[str, int] = {}
            for r in self.rows.values():
                counts[r["state"]] = counts.get(r["state"], 0) + 1
            acc = row.get("val_acc")
            acc_s = f"acc {float(acc):.3f}" if acc not in ("", None) and row["state"] != "infeasible" else ""
            lat = row.get("latency_ms")
            lat_s = f"{float(lat):.2f} ms" if lat not in ("", None) else ""
            front = len(pareto_names(list(self.rows.values())))
            tally = " ".join(f"{k} {counts.get(k, 0)}" for k in ("complete", "pruned", "infeasible", "failed"))
            extra = f"  ({row['error']})" if row.get("error") else ""
            self.progress(f"[trial {row['number']}] {row['state']:<10} {row['name'] or '-'}  {acc_s}  {lat_s}"
                          f"  epochs {row['epochs_done']}/{self.epochs}{extra}\n    done: {tally}; front {front}")

    return Recorder


def pareto_names(rows: list[dict]) -> list[str]:
    """Names of complete trials on the accuracy/latency front."""
    from lkscale.pareto import pareto_front

    done = [r for r in rows if r.get("state") == "complete"]
    idx = pareto_front([(float(r["val_acc"]), float(r["latency_ms"])) for r in done])
    return sorted({done[i]["name"] for i in idx})


# ------------------------------------------------------------------------------------------ searcher
def _make_searcher_class():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that records pruned trials as PRUNED, failed as FAIL, infeasible as constrained."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            self._completed_trials.add(trial_id)
            if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
                return  # told before an interruption; the restored searcher checkpoint predates it
            result = result or {}
            acc, lat = result.get("val_acc"), result.get("latency_ms")
            if result.get("val_acc_epochs"):
                ot_trial.set_user_attr("val_acc_epochs", json.loads(result["val_acc_epochs"]))
            if error or result.get("failed"):
                ot_trial.set_user_attr("error", str(result.get("error", "trial process failed"))[:500])
                self._tell(ot_trial, None, optuna.trial.TrialState.FAIL)
            elif result.get("pruned") or (not result.get("infeasible") and acc is None):
                ot_trial.set_user_attr("pruned_at_epoch", result.get("epoch"))
                self._tell(ot_trial, None, optuna.trial.TrialState.PRUNED)
            else:  # complete, or infeasible (values kept so the sampler learns; constraint > 0 excludes it)
                self._tell(ot_trial, [float(acc or 0.0), float(lat or 0.0)], optuna.trial.TrialState.COMPLETE)

        def _tell(self, ot_trial, values, state):
            try:
                self._ot_study.tell(ot_trial, values, state=state)
            except Exception as e:  # noqa: BLE001 - e.g. the trial was already finished before a resume
                log.warning("optuna tell failed for trial %s: %s", ot_trial.number, e)

    return StudySearch


def make_sampler(study: Study):
    import optuna

    s = study.search
    seed = s["seed"]
    if s["sampler"] == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(2, s["trials"] // 3)),
                                          multivariate=True, group=True)
    if s["sampler"] == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, s["trials"] // 3)))
    if s["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    g = space_grid(study.space)
    if not g:
        raise StudyError("search.sampler", "grid: the space has no choices to enumerate")
    return _TuneGridSampler(g, seed=seed)


class _TuneGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose exhausted grid does not call ``study.stop()``: Tune's trial count ends the sweep, and
    ``Study.stop`` raises outside ``optimize()`` (the trial's result is already stored by then). Module level,
    so Tune can pickle the searcher that holds it."""

    def after_trial(self, study, trial, state, values) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError as e:
            if "Study.stop" not in str(e):
                raise


def optuna_storage(run_dir: str, url: str | None = None):
    import optuna

    if url:
        return optuna.storages.RDBStorage(url) if "://" in url else _journal(url)
    return _journal(os.path.join(run_dir, "optuna.journal"))


def _journal(path: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(path))


# ------------------------------------------------------------------------------------------ driver
def check_data(study: Study) -> None:
    """Decode (and cache) the dataset once in the driver: a missing dataset fails before Ray starts."""
    from lkscale.data import DataConfig, DataError, load_splits

    d = study.data
    try:
        load_splits(DataConfig(dataset=d["dataset"], root=d["root"], train_per_class=d["train_per_class"],
                               val_per_class=d["val_per_class"], test_per_class=0, input_size=d["input_size"],
                               seed=study.proxy["seed"]))
    except DataError as e:  # name the study field the problem belongs to
        msg = str(e)
        raise StudyError("data" if msg.startswith("data.") else "data.root", msg) from None


def run_study(study: Study | str, output: str | None = None, resume: bool = False, address: str | None = None,
              storage: str | None = None, optuna_url: str | None = None, trials: int | None = None,
              verbose: bool = False, progress: Callable[[str], None] | None = None,
              max_failures: int = 2) -> str:
    """Run (or resume) a study; returns the run folder. Nothing already in the folder is lost."""
    if isinstance(study, str):
        study = load_study(study)
    say = progress or (lambda m: log.info(m))
    run_dir = os.path.abspath(output or study.output)
    tune_root = os.path.abspath(storage) if storage and "://" not in storage else run_dir
    has_run = os.path.isfile(os.path.join(run_dir, "study.yaml")) and os.path.isdir(os.path.join(tune_root, "tune"))
    if storage and "://" in storage:  # Tune's folders are in remote storage: the run folder is the record
        has_run = os.path.isfile(os.path.join(run_dir, "study.yaml")) and (
            bool(optuna_url) or os.path.isfile(os.path.join(run_dir, "optuna.journal")))
    if has_run and not resume:
        raise StudyError("output", f"{run_dir} already holds a search; pass --resume to continue it or choose "
                                   f"another --output")
    if resume and not has_run:
        raise StudyError("output", f"nothing to resume in {run_dir} (no study.yaml and tune/ folder)")
    os.makedirs(run_dir, exist_ok=True)
    if study.data["root"]:
        study.data["root"] = os.path.abspath(os.path.expanduser(study.data["root"]))
    say(f"study {study.name}: checking data")
    check_data(study)
    if not resume:
        _atomic_write(os.path.join(run_dir, "study.yaml"), study.to_yaml())
    budget_trials = trials or study.search["trials"]
    _quiet(verbose)
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from lkscale.pruning import make_scheduler

    exp_name = "tune"
    if resume:
        finished, requeued = prepare_resume(study, run_dir, optuna_url)
        remaining = budget_trials - finished
        say(f"resuming: {finished} trials already finished are kept; {requeued} interrupted trial(s) re-queued; "
            f"{max(0, remaining)} to run")
        k = 1
        while os.path.isdir(os.path.join(tune_root, f"tune_resume{k}")):
            k += 1
        exp_name = f"tune_resume{k}"
        if storage and "://" in storage:  # cannot list remote storage here: a name that cannot collide
            exp_name = "tune_resume-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        if remaining <= 0:
            write_summary(run_dir, study)
            return run_dir
        budget_trials = remaining
    objective = Objective(study, run_dir)
    if study.search["sampler"] == "grid":
        precost_grid(study, objective, say)
    if not resume:
        check_budgets_feasible(study)
    if not ray.is_initialized():
        say("starting Ray" if not address else f"connecting to Ray at {address}")
        ray.init(address=address, include_dashboard=False, logging_level=logging.INFO if verbose else logging.ERROR,
                 log_to_driver=verbose, configure_logging=True)
    Recorder = _make_callback_class()
    recorder = Recorder(run_dir, study.proxy["epochs"], study.proxy["seed"], progress)
    param_space = {"run_dir": run_dir, "data": study.data, "proxy": study.proxy,
                   "cpus_per_trial": study.resources["cpus_per_trial"], "weights_checkpoint": bool(address)}
    trainable = train_candidate
    if address:  # a cluster: nodes without the data root get it from the object store (once per node)
        stage = data_stage_payload(study.data)
        if stage is not None:
            trainable = tune.with_parameters(train_candidate, data_stage=stage)
        if not storage:
            say(f"note: Tune results and trial weights go to {run_dir}; on a cluster without a shared "
                f"filesystem pass --storage (a path every node shares, or a URI such as s3://...)")
    trainable = tune.with_resources(trainable, {"cpu": study.resources["cpus_per_trial"]})
    StudySearch = _make_searcher_class()
    searcher = StudySearch(space=objective, metric=["val_acc", "latency_ms"], mode=["max", "min"],
                           sampler=make_sampler(study), study_name=study.name,
                           storage=optuna_storage(run_dir, optuna_url))
    pr = study.search["pruning"]
    scheduler = make_scheduler(pr["scheduler"], study.proxy["epochs"], pr["grace_epochs"], pr["reduction_factor"])
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=study.search["concurrency"]),
                                    scheduler=scheduler, num_samples=budget_trials, reuse_actors=False,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=exp_name, storage_path=tune_root if "://" not in (storage or "") else storage,
                                  verbose=2 if verbose else 0, callbacks=[recorder],
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    t0 = time.time()
    say(f"searching: {budget_trials} trials, {study.search['concurrency']} at a time, "
        f"{study.proxy['epochs']} epochs each; results in {run_dir}")
    tuner.fit()
    close_abandoned(study, run_dir, optuna_url)
    write_summary(run_dir, study, seconds=time.time() - t0)
    return run_dir


def prepare_resume(study: Study, run_dir: str, optuna_url: str | None = None) -> tuple[int, int]:
    """Make the run folder consistent after an interruption; returns (finished trials, re-queued trials).

    The Optuna storage and trials.csv are the record: finished trials stay (never trained again, the
    sampler keeps its history); trials the interruption cut off are closed as FAIL in Optuna, dropped
    from trials.csv, and their parameters queued again so they are trained from the start.
    """
    import optuna

    st = optuna.load_study(study_name=study.name, storage=optuna_storage(run_dir, optuna_url))
    requeued = 0
    for t in st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        st._storage.set_trial_user_attr(t._trial_id, "error", "interrupted; its parameters were queued again")
        st._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        if t.params:
            st.enqueue_trial(t.params, skip_if_exists=False)
            requeued += 1
    rows = [r for r in read_trials(run_dir) if r["state"] != "running"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    _atomic_write(os.path.join(run_dir, "trials.csv"), buf.getvalue())
    return len(rows), requeued


def close_abandoned(study: Study, run_dir: str, optuna_url: str | None = None) -> int:
    """After a finished Tune run: Optuna trials still RUNNING (asked by the searcher, never told) are closed
    as FAIL, so the storage holds no phantom running trials. Returns how many were closed.
    (Added by the cluster work: run_study called it but it was not defined.)"""
    import optuna

    st = optuna.load_study(study_name=study.name, storage=optuna_storage(run_dir, optuna_url))
    n = 0
    for t in st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        st._storage.set_trial_user_attr(t._trial_id, "error", "abandoned: asked by the searcher, never finished")
        st._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        n += 1
    return n


def check_budgets_feasible(study: Study, samples: int = 24) -> None:
    """Fail fast (one clear error) when no candidate can meet the params/FLOPs budgets.

    Checks every grid point (grid sampler) or ``samples`` random points of the space, counting params
    and FLOPs only (cheap; latency is left to the search). Catches impossible budgets before Ray starts.
    """
    b = study.budgets
    if not (b.get("max_params") or b.get("max_flops")):
        return
    import itertools

    import optuna

    from lkscale.cost import count_flops, count_params
    from lkscale.model import build_model
    from lkscale.reparam import reparameterize
    from lkscale.space import candidate as rebuild

    if study.search["sampler"] == "grid":
        g = space_grid(study.space)
        cands = [rebuild(study.space, dict(zip(g, combo)), study.data["input_size"]) for combo in itertools.product(*g.values())]
    else:
        scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=study.search["seed"]))
        cands = [suggest(scratch.ask(), study.space, study.data["input_size"]) for _ in range(samples)]
    specs = {c.spec.name: c.spec for c in cands if c.spec is not None}
    if not specs:
        raise StudyError("space", "no point of the space builds a valid network: " + (cands[0].error if cands else ""))
    best_p, best_f = math.inf, math.inf
    for spec in specs.values():
        model = build_model(spec, num_classes=10)
        params = count_params(model)
        if b.get("max_params") and params > b["max_params"]:
            best_p = min(best_p, params)
            continue
        flops = count_flops(reparameterize(model), b["latency_input_size"])[0]
        if b.get("max_flops") and flops > b["max_flops"]:
            best_f = min(best_f, flops)
            continue
        return  # at least one candidate fits
    which = "the whole grid" if study.search["sampler"] == "grid" else f"{len(specs)} sampled candidates"
    if best_p < math.inf and (not b.get("max_flops") or best_f == math.inf):
        raise StudyError("budgets.max_params", f"{b['max_params']:.4g} leaves no feasible candidate: the smallest of "
                                               f"{which} has {best_p:,} parameters")
    raise StudyError("budgets.max_flops", f"{b['max_flops']:.4g} leaves no feasible candidate: the cheapest of {which} "
                                          f"needs {best_f:,} multiply-adds (at {b['latency_input_size']} px)")


def precost_grid(study: Study, objective: "Objective", say: Callable[[str], None]) -> None:
    """Cost every grid point before any training, so latencies are measured on a quiet machine."""
    import itertools

    from lkscale.space import candidate as rebuild

    g = space_grid(study.space)
    names, values = list(g), list(itertools.product(*g.values()))
    todo = []
    for combo in values:
        cand = rebuild(study.space, dict(zip(names, combo)), study.data["input_size"])
        if cand.spec is not None and cand.spec.name not in objective.costs:
            todo.append(cand.spec)
    uniq = {s.name: s for s in todo}
    if uniq:
        say(f"costing {len(uniq)} grid candidates before training (params, FLOPs, deploy latency)")
    for i, spec in enumerate(uniq.values()):
        objective.cost(spec)


def _quiet(verbose: bool) -> None:
    """Progress is ours (a line per trial); Ray's status tables and hints only with --verbose."""
    import warnings

    import optuna

    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Costing a candidate in the define-by-run function is deliberate: budgets are checked before training.
    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument")


def write_summary(run_dir: str, study: Study, seconds: float | None = None) -> dict:
    rows = read_trials(run_dir)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    saved = sum(int(r["epochs_budget"]) - int(float(r["epochs_done"] or 0)) for r in rows if r["state"] == "pruned")
    path = os.path.join(run_dir, "summary.json")
    old = {}
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
    summary = {**old, "study": study.name, "counts": counts, "trials": len(rows), "trial_epochs_saved": saved,
               "trial_epochs_budget": len([r for r in rows if r["state"] != "infeasible"]) * study.proxy["epochs"],
               "front": pareto_names(rows), "pruning": study.search["pruning"]["scheduler"]}
    if seconds is not None:
        summary["seconds_last_run"] = round(seconds, 1)
    _atomic_write(path, json.dumps(summary, indent=2))
    return summary


def front_table(run_dir: str) -> str:
    """The accuracy/latency front as a plain text table (the report module makes the full report)."""
    rows = read_trials(run_dir)
    names = set(pareto_names(rows))
    by_name = {r["name"]: r for r in rows if r["state"] == "complete" and r["name"] in names}  # reused results once
    front = sorted(by_name.values(), key=lambda r: float(r["latency_ms"]))
    lines = [f"{'name':<52} {'kernels':<16} {'params':>9} {'MACs':>9} {'lat ms':>7} {'acc':>6}"]
    for r in front:
        lines.append(f"{r['name']:<52} {'/'.join(map(str, json.loads(r['kernels']))):<16} "
                     f"{int(float(r['params'])) / 1e6:>8.2f}M {int(float(r['flops'])) / 1e6:>8.1f}M "
                     f"{float(r['latency_ms']):>7.2f} {float(r['val_acc']):>6.3f}")
    return "\n".join(lines)

