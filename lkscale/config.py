"""Typed configuration: one small dataclass per section of a study, one set of defaults.

Every default lives here and nowhere else: ``lkscale.data``, ``lkscale.train``, the search, the export
and the CLI all take these objects (the way Ray passes ``TuneConfig``/``RunConfig``). A study file is
validated once, section by section, by :func:`build` (unknown fields and bad values name the field
path), and the resulting objects are passed down unchanged.

This module is the lowest floor: it imports nothing from lkscale.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

DATASETS = ("imagefolder", "cifar10", "fashion_mnist", "synthetic")
SAMPLERS = ("tpe", "nsga2", "random", "grid")
SCHEDULERS = ("moasha", "asha", "optuna", "none")
OPTUNA_PRUNERS = ("successive_halving", "hyperband", "median", "moasha")
MODES = ("front", "scaling")
RUNTIMES = ("onnxruntime", "torch", "compile", "cuda")
LATENCY_SOURCES = ("measured", "predicted")
OBJECTIVES = ("latency", "throughput")
PRECISIONS = ("fp32", "bf16", "fp16")
COST_CLASSES = 10  # candidates are costed (params, MACs, latency) with a 10-class head, whatever the dataset


class ConfigError(ValueError):
    """A bad configuration value; ``field_path`` names it (``proxy.epochs``)."""

    def __init__(self, path: str, message: str):
        self.field_path = path
        super().__init__(f"{path}: {message}")


def default_cache_dir(configured: str | None = None) -> str:
    """Where lkscale keeps what it may recompute (decoded datasets, staged data, dwconv autotune choices):
    ``configured`` (a study's ``data.cache_dir``), else ``$LKSCALE_CACHE``, else ``~/.cache/lkscale``."""
    return configured or os.environ.get("LKSCALE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lkscale")


# ------------------------------------------------------------------------------------------ sections
@dataclass
class DataConfig:
    dataset: str = "imagefolder"
    root: str | None = None             # None: default_data_root(dataset)
    train_per_class: int | None = None  # None: all the training images left after the validation split
    val_per_class: int = 100            # carved from the training split
    test_per_class: int | None = None   # None: all; 0: no test split
    input_size: int | None = 32         # None: native size; otherwise images are resized to it
    seed: int = 0                       # the data subset (a replicate index sets it in a search)
    val_seed: int | None = None         # the validation sample (None: drawn with `seed`, as one shuffle with the subset)
    augment: bool = False               # random crop + flip (off: a 4-epoch proxy ranks better without; measured)
    download: bool = False              # fetch CIFAR-10 from its official source when no local copy is found
    cache_dir: str | None = None        # None: $LKSCALE_CACHE or ~/.cache/lkscale
    synthetic_classes: int = 10         # synthetic only


@dataclass
class TrainConfig:
    epochs: float = 4
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.2   # fractions allowed; warm-up is linear per step from lr * warmup_start
    warmup_start: float = 0.01
    min_lr_ratio: float = 0.01   # cosine decays to lr * min_lr_ratio
    label_smoothing: float = 0.1
    clip_grad: float | None = 1.0
    threads: int | None = None   # torch intra-op threads; None leaves torch's setting alone
    seed: int = 0                # batch order (and init unless init_seed); a replicate index sets it in a search
    init_seed: int | None = None # the initial weights where the caller builds the model from it (None: `seed`)
    channels_last: bool = True
    augment: bool | None = None  # None: as the data asks (DataConfig.augment)
    eval_batch_size: int = 500
    betas: tuple[float, float] = (0.9, 0.999)
    bn_recalibrate_batches: int = 10  # before each validation, recompute BN statistics on this many batches
    val_every_epoch: bool = True # False: recalibrate BN and validate after the last epoch only (no learning curve)
    device: str = "auto"         # auto (the GPU Ray assigns, else CPU) | cpu | cuda | cuda:N
    precision: str = "fp32"      # fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler)
    fused_optimizer: bool = True # fused AdamW + foreach gradient clipping (False: the per-parameter loops of before)

    def validate(self) -> None:
        """The settings built in code (``lkscale.train``): :func:`validate` with the ``proxy`` rules."""
        validate(self, "proxy")


@dataclass(frozen=True)
class LatencyConfig:
    runtime: str = "onnxruntime"   # onnxruntime | torch | compile | cuda
    batch_size: int = 1
    threads: int = 1
    input_size: int | None = None  # None: the study's data.input_size
    rounds: int = 7                # interleaved rounds
    repeats: int = 10              # timed calls per candidate per round
    max_cv: float = 0.1            # relative spread above which a measurement is repeated, then flagged
    block_stat: str = "min"        # a round's value from its block of calls: min (preemption only adds time) | median
    max_extra_rounds: int = 7
    source: str = "measured"       # measured | predicted
    table: str | None = None       # a calibration table (JSON) for source: predicted
    objective: str = "latency"     # latency | throughput
    # relative sd a measurement run adds when its latencies are compared with another run's (the intervals
    # cover one run's noise only); measured: benchmarks/results/latency_between_runs.json (2 busy cores)
    between_run_cv: float = 0.19
    # a Ray resource only the deploy-like node declares ({"edge_cpu": 1}): latency is measured there, as a Ray
    # task holding all that node's CPUs (the node is reserved for measuring during the search); None: here
    resources: dict | None = field(default=None, hash=False, compare=True)


@dataclass(frozen=True)
class BudgetConfig:
    max_params: float | None = None
    max_flops: float | None = None      # multiply-adds per image at the latency input size
    max_latency_ms: float | None = None
    latency: LatencyConfig = field(default_factory=LatencyConfig)

    def limits(self) -> dict[str, float]:
        """{cost field: limit} for every budget that is set."""
        pairs = (("params", self.max_params), ("flops", self.max_flops), ("latency_ms", self.max_latency_ms))
        return {k: float(v) for k, v in pairs if v}


def rung_epochs(epochs: int, grace: int, reduction_factor: float) -> list[int]:
    """The epochs at which successive halving decides: ``grace``, then each rung times ``reduction_factor``
    (rounded up), before the last epoch. The one definition the schedulers, the plan and the reports use."""
    if grace < 1 or reduction_factor <= 1:
        raise ValueError("grace_epochs must be >= 1 and reduction_factor > 1")
    rungs, r = [], grace
    while r < epochs:
        rungs.append(int(r))
        r = math.ceil(r * reduction_factor)
    return rungs


@dataclass(frozen=True)
class PruningConfig:
    scheduler: str = "moasha"      # moasha | asha | optuna | none
    pruner: str = "successive_halving"  # scheduler: optuna -> successive_halving | hyperband | median | moasha
    grace_epochs: int = 2          # first rung; epoch 1 ranks poorly on real runs (benchmarks/pruning_rules.py)
    reduction_factor: float = 2.0

    def rungs(self, epochs: int) -> list[int]:
        return rung_epochs(epochs, self.grace_epochs, self.reduction_factor)


@dataclass(frozen=True)
class ConfirmConfig:
    """Racing after the search: more replicates for the front and whatever is tied with it."""
    enabled: bool = False
    max_replicates: int = 6
    budget_epochs: int = 0         # extra trial-epochs allowed (0: 2 x the proxy epochs x the front size)
    confidence: float = 0.95


@dataclass(frozen=True)
class AdaptiveConfig:
    """A scaling study's adaptive replicates (``lkscale.search.adaptive``): after the first ``replicates``,
    one more replicate per look for the settings of undecided comparisons, error spent over the looks."""
    enabled: bool = False
    max_replicates: int = 10       # per setting: the last look
    looks: int = 3                 # planned looks, evenly spaced from search.replicates to max_replicates (alpha / looks each)
    budget_epochs: int = 0         # extra trial-epochs allowed (0: no cap but max_replicates)


@dataclass(frozen=True)
class SearchConfig:
    sampler: str = "tpe"
    trials: int = 16
    concurrency: int = 2
    seed: int = 0
    mode: str = "front"            # front: sample and prune; scaling: every grid point, full fidelity, replicates
    replicates: int = 1            # replicates per candidate (common random numbers: replicate r = seed r)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)


@dataclass(frozen=True)
class ResourceConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0    # fractional: several trials share one GPU
    memory_per_trial_mb: float | None = None  # a trial growing past this many MiB fails alone (lkscale.search.memory)


@dataclass(frozen=True)
class TrackingConfig:
    """Where a search is also tracked (``tracking:`` in a study, ``--mlflow`` on ``lkscale search``)."""
    mlflow: str | None = None           # an MLflow tracking URI (sqlite:///PATH.db, http://HOST:5000); None: off
    experiment: str | None = None       # the MLflow experiment (None: the study's name)


@dataclass(frozen=True)
class FidelityConfig:
    """Retrain a sample of a finished search at a higher fidelity (``lkscale fidelity``; ``fidelity:`` in a
    study runs it after the search). None: the study's own setting."""
    enabled: bool = True
    sample: int = 8                     # the front plus candidates spread over accuracy and latency
    epochs: int = 16                    # 4x the main study's proxy epochs
    train_per_class: int | None = None
    val_per_class: int | None = None    # None: the proxy's validation images (same seed: the same images)
    augment: bool = True
    input_size: int | None = None
    concurrency: int = 2
    seed: int = 0
    top_k: int = 3
    warn_tau: float = 0.5               # warn when Kendall tau (point estimate) is below this


@dataclass(frozen=True)
class AnalysisConfig:
    """How a report decides comparisons (``analysis:`` in a study; ``lkscale.comparisons.decide``)."""
    margin: float = 1.0    # accuracy points: within +-margin is *equivalent*. ConvNeXt's own ImageNet ablation
                           # moves 0.1-0.7 points per kernel step, so a step smaller than 1 point is not worth its cost
    alpha: float = 0.05    # each one-sided test; a verdict is read off the 1 - 2*alpha (90%) interval
    power: float = 0.8     # for the replicates an undecided comparison needs and the minimum detectable effect


# ------------------------------------------------------------------------------------------ validation
# Rules per field: (kind, lower bound, strict, optional, allowed). kind: int | num | bool | str.
_R = dict
RULES: dict[type, dict[str, dict]] = {
    DataConfig: {"dataset": _R(kind="str", allowed=DATASETS), "root": _R(kind="str", optional=True),
                 "train_per_class": _R(kind="int", lo=1, optional=True), "val_per_class": _R(kind="int", lo=1),
                 "test_per_class": _R(kind="int", lo=0, optional=True), "input_size": _R(kind="int", lo=8),
                 "augment": _R(kind="bool"), "download": _R(kind="bool")},
    TrainConfig: {"epochs": _R(kind="int", lo=1), "batch_size": _R(kind="int", lo=1),
                  "lr": _R(kind="num", lo=0, strict=True), "weight_decay": _R(kind="num", lo=0),
                  "warmup_epochs": _R(kind="num", lo=0), "label_smoothing": _R(kind="num", lo=0),
                  "clip_grad": _R(kind="num", lo=0, optional=True), "seed": _R(kind="int", lo=0),
                  "channels_last": _R(kind="bool"), "fused_optimizer": _R(kind="bool"), "device": _R(kind="str"),
                  "val_every_epoch": _R(kind="bool"),
                  "precision": _R(kind="str", allowed=PRECISIONS)},
    LatencyConfig: {"runtime": _R(kind="str", allowed=RUNTIMES), "batch_size": _R(kind="int", lo=1),
                    "threads": _R(kind="int", lo=1), "input_size": _R(kind="int", lo=8, optional=True),
                    "rounds": _R(kind="int", lo=2), "repeats": _R(kind="int", lo=1),
                    "max_cv": _R(kind="num", lo=0, strict=True), "max_extra_rounds": _R(kind="int", lo=0),
                    "block_stat": _R(kind="str", allowed=("min", "median")),
                    "source": _R(kind="str", allowed=LATENCY_SOURCES), "table": _R(kind="str", optional=True),
                    "objective": _R(kind="str", allowed=OBJECTIVES), "between_run_cv": _R(kind="num", lo=0),
                    "resources": _R(kind="resources", optional=True)},
    BudgetConfig: {"max_params": _R(kind="num", lo=0, strict=True, optional=True),
                   "max_flops": _R(kind="num", lo=0, strict=True, optional=True),
                   "max_latency_ms": _R(kind="num", lo=0, strict=True, optional=True)},
    PruningConfig: {"scheduler": _R(kind="str", allowed=SCHEDULERS), "pruner": _R(kind="str", allowed=OPTUNA_PRUNERS),
                    "grace_epochs": _R(kind="int", lo=1),
                    "reduction_factor": _R(kind="num", lo=1, strict=True)},
    ConfirmConfig: {"enabled": _R(kind="bool"), "max_replicates": _R(kind="int", lo=1),
                    "budget_epochs": _R(kind="int", lo=0), "confidence": _R(kind="num", lo=0.5, strict=True)},
    AdaptiveConfig: {"enabled": _R(kind="bool"), "max_replicates": _R(kind="int", lo=1),
                     "looks": _R(kind="int", lo=1), "budget_epochs": _R(kind="int", lo=0)},
    SearchConfig: {"sampler": _R(kind="str", allowed=SAMPLERS), "trials": _R(kind="int", lo=1),
                   "concurrency": _R(kind="int", lo=1), "seed": _R(kind="int", lo=0),
                   "mode": _R(kind="str", allowed=MODES), "replicates": _R(kind="int", lo=1)},
    ResourceConfig: {"cpus_per_trial": _R(kind="num", lo=0, strict=True), "gpus_per_trial": _R(kind="num", lo=0),
                     "memory_per_trial_mb": _R(kind="num", lo=0, strict=True, optional=True)},
    TrackingConfig: {"mlflow": _R(kind="str", optional=True), "experiment": _R(kind="str", optional=True)},
    FidelityConfig: {"enabled": _R(kind="bool"), "sample": _R(kind="int", lo=3), "epochs": _R(kind="int", lo=1),
                     "train_per_class": _R(kind="int", lo=1, optional=True),
                     "val_per_class": _R(kind="int", lo=1, optional=True), "augment": _R(kind="bool"),
                     "input_size": _R(kind="int", lo=8, optional=True), "concurrency": _R(kind="int", lo=1),
                     "seed": _R(kind="int", lo=0), "top_k": _R(kind="int", lo=1), "warn_tau": _R(kind="num", lo=-1)},
    AnalysisConfig: {"margin": _R(kind="num", lo=0, strict=True), "alpha": _R(kind="num", lo=0, strict=True),
                     "power": _R(kind="num", lo=0, strict=True)},
}
NESTED = {BudgetConfig: {"latency": LatencyConfig}, SearchConfig: {"pruning": PruningConfig, "confirm": ConfirmConfig,
                                                               "adaptive": AdaptiveConfig}}


def _check(path: str, v: Any, kind: str, lo: float | None = None, strict: bool = False, optional: bool = False,
           allowed: tuple = ()) -> Any:
    if v is None:
        if optional:
            return None
        raise ConfigError(path, "missing (null is not allowed here)")
    if kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(path, f"{v!r} must be true or false")
        return v
    if kind == "resources":  # a Ray resource request: {name: amount > 0}
        if not isinstance(v, Mapping) or not v or not all(
                isinstance(k, str) and k and isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0
                for k, a in v.items()):
            raise ConfigError(path, f"{v!r}: give a mapping of Ray resource names to amounts > 0, e.g. "
                                    f"{{edge_cpu: 1}}")
        if set(v) & {"CPU", "GPU", "memory", "object_store_memory"}:
            raise ConfigError(path, f"{v!r}: name a custom resource only the target node declares, not CPU/GPU")
        return {str(k): float(a) for k, a in v.items()}
    if kind == "str":
        if not isinstance(v, str) or (allowed and v not in allowed):
            raise ConfigError(path, f"{v!r} unknown; allowed: {', '.join(allowed)}" if allowed else f"{v!r}: give a string")
        return v
    if isinstance(v, str):  # YAML reads 1e-3 as a string
        try:
            v = float(v)
        except ValueError:
            pass
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if ok and kind == "int":
        ok = float(v).is_integer()
        v = int(v) if ok else v
    if ok and lo is not None:
        ok = v > lo if strict else v >= lo
    if not ok:
        what = "an integer" if kind == "int" else "a number"
        bound = "" if lo is None else f" {'>' if strict else '>='} {lo:g}"
        raise ConfigError(path, f"{v!r} must be {what}{bound}" + (" or null" if optional else ""))
    return v


# What code may set beyond a study file: fractional epochs (the last epoch is partial; a study's rungs are whole
# epochs), torch threads, and the images' native size (input_size None).
CODE_RULES: dict[type, dict[str, dict]] = {
    TrainConfig: {"epochs": _R(kind="num", lo=0, strict=True), "threads": _R(kind="int", lo=1, optional=True)},
    DataConfig: {"input_size": _R(kind="int", lo=8, optional=True)},
}


def validate(obj: Any, path: str) -> None:
    """The one check of a config object built in code (a study file is checked by :func:`build`): every field
    of ``RULES`` (widened by ``CODE_RULES``) as a study file would be; ConfigError names the field path."""
    for k, rule in {**RULES[type(obj)], **CODE_RULES.get(type(obj), {})}.items():
        _check(f"{path}.{k}", getattr(obj, k), **rule)


def build(cls: type, raw: Any, path: str, **fixed: Any) -> Any:
    """Validate a study section (a mapping or None) into ``cls``; defaults are the dataclass's own.

    Only the fields in ``RULES[cls]`` (plus nested sections) may be set from a study file; ``fixed``
    sets other fields from code (e.g. the seed a replicate fixes)."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"expected a mapping, got {type(raw).__name__}")
    rules, nested = RULES[cls], NESTED.get(cls, {})
    allowed = list(rules) + list(nested)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}", f"unknown field; allowed: {', '.join(allowed)}")
    values = {k: _check(f"{path}.{k}", raw[k], **rules[k]) for k in rules if k in raw}
    for k, sub in nested.items():
        if k in raw:
            values[k] = build(sub, raw[k], f"{path}.{k}")
    return cls(**{**values, **fixed})


def to_dict(obj: Any) -> dict:
    """A config object as plain data (for study.yaml as resolved, summary.json, Ray's param space)."""
    return dataclasses.asdict(obj)


def from_dict(cls: type, d: Mapping) -> Any:
    """Inverse of :func:`to_dict` for a trusted mapping (no validation; nested sections rebuilt)."""
    kw = dict(d)
    for k, sub in NESTED.get(cls, {}).items():
        if isinstance(kw.get(k), Mapping):
            kw[k] = from_dict(sub, kw[k])
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in kw.items() if k in names}
    if cls is TrainConfig and isinstance(kw.get("betas"), list):
        kw["betas"] = tuple(kw["betas"])
    return cls(**kw)
