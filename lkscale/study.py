"""Study files: the YAML that declares a search (space, data, proxy budget, cost budgets, search).

Every field is validated on load; an error names the field path, the bad value and what is allowed
(``StudyError``). The full format is documented in ``docs/study-format.md``.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from lkscale.spec import KNOWN_BLOCKS


class StudyError(ValueError):
    def __init__(self, path: str, message: str):
        self.field_path = path
        super().__init__(f"{path}: {message}")


# ---------------------------------------------------------------- knobs
# A knob is fixed (a value), a choice (a list, or {choices: [...]}) or a range ({low, high[, step][, log]}).
# List-valued knobs (kernels, depths, widths, reparam) are fixed when given one flat list and a choice
# when given a list of lists.

@dataclass(frozen=True)
class Knob:
    choices: tuple  # all allowed values (a range is expanded when it has a step)
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def fixed(self) -> bool:
        return self.low is None and len(self.choices) == 1

    @property
    def value(self):
        return self.choices[0]


def _parse_knob(obj: Any, path: str, list_valued: bool = False, kind: type | tuple = (int,)) -> Knob:
    if isinstance(obj, Mapping):
        keys = set(obj)
        if keys == {"choices"}:
            ch = obj["choices"]
            if not isinstance(ch, list) or not ch:
                raise StudyError(f"{path}.choices", f"{ch!r}: give a non-empty list of values")
            return Knob(tuple(_freeze(c) for c in ch))
        if {"low", "high"} <= keys <= {"low", "high", "step", "log"}:
            lo, hi, step = obj["low"], obj["high"], obj.get("step")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) or lo > hi:
                raise StudyError(path, f"range low={lo!r} high={hi!r}: need numbers with low <= high")
            if step is not None:
                if not isinstance(step, (int, float)) or step <= 0:
                    raise StudyError(f"{path}.step", f"{step!r}: must be a number > 0")
                n = int(round((hi - lo) / step))
                vals = tuple(type(lo)(lo + i * step) for i in range(n + 1) if lo + i * step <= hi + 1e-9)
                return Knob(vals)
            if isinstance(lo, int) and isinstance(hi, int):
                return Knob(tuple(range(lo, hi + 1)))
            return Knob((lo,), low=float(lo), high=float(hi), log=bool(obj.get("log", False)))
        raise StudyError(path, f"{dict(obj)!r}: a knob is a value, a list of choices, {{choices: [...]}} or {{low, high, step}}")
    if list_valued:
        if isinstance(obj, list) and obj and all(isinstance(v, list) for v in obj):
            return Knob(tuple(_freeze(v) for v in obj))
        if isinstance(obj, list):
            return Knob((_freeze(obj),))
        if isinstance(obj, (int, str)) and not isinstance(obj, bool):
            return Knob(((obj,),))
        raise StudyError(path, f"{obj!r}: expected a list (fixed) or a list of lists (choices)")
    if isinstance(obj, list):
        if not obj:
            raise StudyError(path, "empty list: give at least one choice")
        return Knob(tuple(_freeze(v) for v in obj))
    return Knob((_freeze(obj),))


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, list) else v


# ---------------------------------------------------------------- sections
STAGE_KNOBS = ("block", "depth", "width", "kernel", "dcn_groups", "reparam", "ffn_ratio")
GLOBAL_KNOBS = ("stem_stride", "block", "depth", "width", "kernel", "dcn_groups", "reparam", "ffn_ratio")
PATTERN_KNOBS = ("kernels", "depths", "widths")


@dataclass(frozen=True)
class SpaceConfig:
    base: dict | None  # a spec dict (from a preset or inline)
    base_name: str | None
    num_stages: int
    knobs: dict  # global knob name -> Knob
    patterns: dict  # "kernels"/"depths"/"widths" -> Knob of tuples
    stages: tuple  # per-stage dict knob name -> Knob
    kernel_clip: str  # "clip" | "reject"
    drop_path_rate: float
    layer_scale: float | None = None  # None: the base's (ConvNeXt's 1e-6 by default)


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    space: SpaceConfig
    data: dict
    proxy: dict
    budgets: dict
    search: dict
    resources: dict
    output: str
    source: str | None = None
    raw: dict = field(default_factory=dict, compare=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


DATA_DEFAULTS = {"dataset": "imagefolder", "root": None, "train_per_class": 500, "val_per_class": 100,
                 "test_per_class": None, "input_size": 32, "augment": True}
PROXY_DEFAULTS = {"epochs": 4, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 0.5,
                  "label_smoothing": 0.1, "clip_grad": 1.0, "seed": 0}
BUDGET_DEFAULTS = {"max_params": None, "max_flops": None, "max_latency_ms": None, "latency_batch_size": 1,
                   "latency_input_size": None, "latency_threads": 1, "latency_repeats": 15}
SEARCH_DEFAULTS = {"sampler": "tpe", "trials": 16, "concurrency": 2, "seed": 0,
                   "pruning": {"scheduler": "moasha", "grace_epochs": 1, "reduction_factor": 2}}
RESOURCE_DEFAULTS = {"cpus_per_trial": 1}
SAMPLERS = ("tpe", "nsga2", "random", "grid")
SCHEDULERS = ("moasha", "asha", "none")
DATASETS = ("imagefolder", "cifar10", "fashion_mnist", "synthetic")


def _section(raw: Mapping, key: str, defaults: dict) -> dict:
    val = raw.get(key) or {}
    if not isinstance(val, Mapping):
        raise StudyError(key, f"expected a mapping, got {type(val).__name__}")
    unknown = sorted(set(val) - set(defaults))
    if unknown:
        raise StudyError(f"{key}.{unknown[0]}", f"unknown field; allowed: {', '.join(defaults)}")
    out = copy.deepcopy(defaults)
    for k, v in val.items():
        if isinstance(defaults.get(k), dict) and isinstance(v, Mapping):
            bad = sorted(set(v) - set(defaults[k]))
            if bad:
                raise StudyError(f"{key}.{k}.{bad[0]}", f"unknown field; allowed: {', '.join(defaults[k])}")
            out[k].update(v)
        else:
            out[k] = v
    return out


def _num(sec: dict, key: str, path: str, lo: float | None = None, integer: bool = False, optional: bool = False,
         strict_lo: bool = False):
    v = sec[key]
    if v is None and optional:
        return
    if isinstance(v, str):
        try:
            v = float(v)
            sec[key] = v
        except ValueError:
            pass
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok and integer:
        ok = float(v).is_integer()
        if ok:
            sec[key] = v = int(v)
    if ok and lo is not None:
        ok = v > lo if strict_lo else v >= lo
    if not ok:
        what = "an integer" if integer else "a number"
        bound = "" if lo is None else f" {'>' if strict_lo else '>='} {lo:g}"
        raise StudyError(f"{path}.{key}", f"{v!r} must be {what}{bound}" + (" or null" if optional else ""))


def parse_study(raw: Any, source: str | None = None) -> Study:
    if not isinstance(raw, Mapping):
        raise StudyError("study", f"expected a mapping at the top level, got {type(raw).__name__}")
    allowed = {"name", "description", "space", "data", "proxy", "budgets", "search", "resources", "output"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise StudyError(unknown[0], f"unknown section; allowed: {', '.join(sorted(allowed))}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise StudyError("name", f"{name!r}: give a name of letters, digits, '_', '-', '.' (at most 64)")
    space = _parse_space(raw.get("space"))

    data = _section(raw, "data", DATA_DEFAULTS)
    if data["dataset"] not in DATASETS:
        raise StudyError("data.dataset", f"{data['dataset']!r} unknown; allowed: {', '.join(DATASETS)}")
    for k in ("train_per_class", "val_per_class", "test_per_class"):
        _num(data, k, "data", lo=1, integer=True, optional=(k != "val_per_class"))
    _num(data, "input_size", "data", lo=8, integer=True)

    proxy = _section(raw, "proxy", PROXY_DEFAULTS)
    _num(proxy, "epochs", "proxy", lo=1, integer=True)
    _num(proxy, "batch_size", "proxy", lo=1, integer=True)
    _num(proxy, "lr", "proxy", lo=0, strict_lo=True)
    for k in ("weight_decay", "warmup_epochs", "label_smoothing", "clip_grad"):
        _num(proxy, k, "proxy", lo=0)
    _num(proxy, "seed", "proxy", lo=0, integer=True)

    budgets = _section(raw, "budgets", BUDGET_DEFAULTS)
    for k in ("max_params", "max_flops", "max_latency_ms"):
        _num(budgets, k, "budgets", lo=0, optional=True, strict_lo=True)
    _num(budgets, "latency_batch_size", "budgets", lo=1, integer=True)
    _num(budgets, "latency_input_size", "budgets", lo=8, integer=True, optional=True)
    _num(budgets, "latency_threads", "budgets", lo=1, integer=True)
    _num(budgets, "latency_repeats", "budgets", lo=1, integer=True)
    if budgets["latency_input_size"] is None:
        budgets["latency_input_size"] = data["input_size"]

    search = _section(raw, "search", SEARCH_DEFAULTS)
    if search["sampler"] not in SAMPLERS:
        raise StudyError("search.sampler", f"{search['sampler']!r} unknown; allowed: {', '.join(SAMPLERS)}")
    _num(search, "trials", "search", lo=1, integer=True)
    _num(search, "concurrency", "search", lo=1, integer=True)
    _num(search, "seed", "search", lo=0, integer=True)
    pr = search["pruning"]
    if not isinstance(pr, Mapping):
        raise StudyError("search.pruning", "expected a mapping {scheduler, grace_epochs, reduction_factor}")
    if pr["scheduler"] not in SCHEDULERS:
        raise StudyError("search.pruning.scheduler", f"{pr['scheduler']!r} unknown; allowed: {', '.join(SCHEDULERS)}")
    _num(pr, "grace_epochs", "search.pruning", lo=1, integer=True)
    _num(pr, "reduction_factor", "search.pruning", lo=1, strict_lo=True)

    resources = _section(raw, "resources", RESOURCE_DEFAULTS)
    _num(resources, "cpus_per_trial", "resources", lo=0, strict_lo=True)

    output = raw.get("output") or os.path.join("runs", name)
    if not isinstance(output, str):
        raise StudyError("output", f"{output!r}: give a folder path")

    resolved = dict(raw)
    resolved.update(data=data, proxy=proxy, budgets=budgets, search=search, resources=resources, output=output)
    return Study(name=name, description=str(raw.get("description", "")), space=space, data=data, proxy=proxy,
                 budgets=budgets, search=search, resources=resources, output=output, source=source, raw=resolved)


def _parse_space(raw: Any) -> SpaceConfig:
    if not isinstance(raw, Mapping):
        raise StudyError("space", "missing or not a mapping; see docs/study-format.md")
    allowed = {"base", "stages", "kernel_clip", "drop_path_rate", "layer_scale", *GLOBAL_KNOBS, *PATTERN_KNOBS}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise StudyError(f"space.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")
    base, base_name = None, None
    if raw.get("base") is not None:
        b = raw["base"]
        if isinstance(b, str):
            from lkscale.presets import all_presets

            table = all_presets()
            if b not in table:
                raise StudyError("space.base", f"unknown preset {b!r}; known: {', '.join(sorted(table))}")
            base, base_name = copy.deepcopy(table[b]), b
        elif isinstance(b, Mapping):
            base = copy.deepcopy(dict(b))
        else:
            raise StudyError("space.base", f"{b!r}: give a preset name or an inline spec mapping")
    stage_list = raw.get("stages") or []
    if not isinstance(stage_list, list):
        raise StudyError("space.stages", "expected a list of per-stage mappings")
    n_base = len(base["stages"]) if base else None
    n_pattern = next((len(_parse_knob(raw[k], f"space.{k}", list_valued=True).choices[0])
                      for k in PATTERN_KNOBS if k in raw), 0)
    n = n_base or len(stage_list) or n_pattern
    if stage_list and n_base and len(stage_list) != n_base:
        raise StudyError("space.stages", f"{len(stage_list)} stages given but base {base_name or ''} has {n_base}")
    if n not in (3, 4):
        raise StudyError("space.stages", f"{n} stages: a network has 3 or 4 (give a base preset or 3-4 stages)")

    knobs = {}
    for k in GLOBAL_KNOBS:
        if k in raw:
            knobs[k] = _parse_knob(raw[k], f"space.{k}", list_valued=(k == "reparam"))
    patterns = {}
    for k in PATTERN_KNOBS:
        if k in raw:
            kn = _parse_knob(raw[k], f"space.{k}", list_valued=True)
            for i, pat in enumerate(kn.choices):
                if len(pat) != n:
                    raise StudyError(f"space.{k}[{i}]" if len(kn.choices) > 1 else f"space.{k}",
                                     f"{list(pat)} has {len(pat)} values for a {n}-stage network")
            patterns[k] = kn
    stages = []
    for i, st in enumerate(stage_list):
        if not isinstance(st, Mapping):
            raise StudyError(f"space.stages[{i}]", "expected a mapping of per-stage knobs")
        bad = sorted(set(st) - set(STAGE_KNOBS))
        if bad:
            raise StudyError(f"space.stages[{i}].{bad[0]}", f"unknown knob; allowed: {', '.join(STAGE_KNOBS)}")
        stages.append({k: _parse_knob(v, f"space.stages[{i}].{k}", list_valued=(k == "reparam")) for k, v in st.items()})
    if not base:
        for i in range(n):
            st = stages[i] if i < len(stages) else {}
            for req in ("depth", "width", "kernel"):
                if req not in st and req not in knobs and f"{req}s" not in patterns:
                    where = f"space.stages[{i}].{req}" if stages else f"space.{req}"
                    raise StudyError(where, "missing: with no base preset every stage needs it")
        if "block" not in knobs and (not stages or any("block" not in st for st in stages)):
            raise StudyError("space.block", "missing: with no base preset give the block family")
    for path, kn in [(f"space.{k}", v) for k, v in knobs.items()] + [
            (f"space.stages[{i}].{k}", v) for i, st in enumerate(stages) for k, v in st.items()]:
        if path.endswith(".block"):
            for c in kn.choices:
                if c not in KNOWN_BLOCKS:
                    raise StudyError(path, f"unknown block {c!r}; known: {', '.join(KNOWN_BLOCKS)}")
        if path.endswith(".kernel"):
            for c in kn.choices:
                if not isinstance(c, int) or c < 1 or c % 2 == 0:
                    raise StudyError(path, f"kernel {c!r} must be an odd integer >= 1")
    if "kernels" in patterns:
        for i, pat in enumerate(patterns["kernels"].choices):
            for j, c in enumerate(pat):
                if not isinstance(c, int) or c < 1 or c % 2 == 0:
                    raise StudyError(f"space.kernels[{i}][{j}]", f"kernel {c!r} must be an odd integer >= 1")
    clip = raw.get("kernel_clip", "clip")
    if clip not in ("clip", "reject"):
        raise StudyError("space.kernel_clip", f"{clip!r}: allowed: clip, reject")
    dpr = raw.get("drop_path_rate", (base or {}).get("drop_path_rate", 0.0) if base_name is None else 0.0)
    if not isinstance(dpr, (int, float)) or not 0 <= dpr < 1:
        raise StudyError("space.drop_path_rate", f"{dpr!r} must be in [0, 1)")
    ls = raw.get("layer_scale")
    if ls is not None and (not isinstance(ls, (int, float)) or isinstance(ls, bool) or ls < 0):
        raise StudyError("space.layer_scale", f"{ls!r} must be a number >= 0 (0 disables layer scale)")
    return SpaceConfig(base=base, base_name=base_name, num_stages=n, knobs=knobs, patterns=patterns,
                       stages=tuple(stages), kernel_clip=clip, drop_path_rate=float(dpr),
                       layer_scale=None if ls is None else float(ls))


def load_study(path: str) -> Study:
    if not os.path.isfile(path):
        raise StudyError("study", f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise StudyError("study", f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_study(raw, source=os.path.abspath(path))
