"""Study files: the YAML that declares a search (space, data, proxy budget, cost budgets, search).

Every field is validated on load; an error names the field path, the bad value and what is allowed
(``StudyError``). The full format is documented in ``docs/study-format.md``.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from lkscale.baselines import BaselineError, parse_baselines
from lkscale.config import (NESTED, RULES, AnalysisConfig, BudgetConfig, ConfigError, ConfirmConfig, DataConfig,
                            FidelityConfig, LatencyConfig, PruningConfig, ResourceConfig, SearchConfig, TrackingConfig,
                            TrainConfig, build, to_dict)
from lkscale.presets import all_presets
from lkscale.space import Knob, SpaceConfig, candidate, grid, grid_points
from lkscale.spec import KNOWN_BLOCKS


class StudyError(ValueError):
    def __init__(self, path: str, message: str):
        self.field_path = path
        super().__init__(f"{path}: {message}")


# ---------------------------------------------------------------- knobs
# A knob is fixed (a value), a choice (a list, or {choices: [...]}) or a range ({low, high[, step][, log]}).
# List-valued knobs (kernels, depths, widths, reparam) are fixed when given one flat list and a choice
# when given a list of lists.

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
class Study:
    name: str
    description: str
    space: SpaceConfig
    data: DataConfig
    proxy: TrainConfig
    budgets: BudgetConfig
    search: SearchConfig
    resources: ResourceConfig
    output: str
    source: str | None = None
    raw_space: dict = field(default_factory=dict, compare=False)
    fidelity: FidelityConfig | None = None  # retrain a sample at higher fidelity after the search
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow (``tracking:``; --mlflow)
    baselines: tuple = ()  # lkscale.baselines.Baseline: reference networks trained beside the candidates
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)  # margin and error rates of the report's verdicts

    @property
    def latency(self) -> LatencyConfig:
        """The latency settings with the input size resolved (the data's when not set)."""
        lat = self.budgets.latency
        return lat if lat.input_size else dataclasses.replace(lat, input_size=self.data.input_size)

    def resolved(self) -> dict:
        """The study with every default filled in; ``parse_study`` reads it back to an equal Study."""
        def fields(obj, cls) -> dict:
            d = to_dict(obj)
            return {k: d[k] for k in (*RULES[cls], *NESTED.get(cls, {}))}

        budgets = fields(self.budgets, BudgetConfig)
        budgets["latency"] = fields(self.budgets.latency, LatencyConfig)
        search = fields(self.search, SearchConfig)
        search["pruning"] = fields(self.search.pruning, PruningConfig)
        search["confirm"] = fields(self.search.confirm, ConfirmConfig)
        return {"name": self.name, "description": self.description, "space": self.raw_space,
                "data": fields(self.data, DataConfig), "proxy": fields(self.proxy, TrainConfig), "budgets": budgets,
                "search": search, "resources": fields(self.resources, ResourceConfig), "output": self.output,
                **({"fidelity": fields(self.fidelity, FidelityConfig)} if self.fidelity else {}),
                **({"tracking": fields(self.tracking, TrackingConfig)} if self.tracking.mlflow else {}),
                **({"baselines": [b.name for b in self.baselines]} if self.baselines else {}),
                "analysis": fields(self.analysis, AnalysisConfig)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False)


# Old flat latency keys of ``budgets`` (still read): -> fields of ``budgets.latency``.
_OLD_LATENCY_KEYS = {"latency_batch_size": "batch_size", "latency_input_size": "input_size",
                     "latency_threads": "threads", "latency_repeats": "repeats"}


def _section(raw: Mapping, key: str) -> Any:
    val = raw.get(key)
    if val is not None and not isinstance(val, Mapping):
        raise StudyError(key, f"expected a mapping, got {type(val).__name__}")
    return dict(val or {})


def _budgets(raw: Mapping) -> BudgetConfig:
    b = _section(raw, "budgets")
    lat = dict(b.get("latency") or {}) if isinstance(b.get("latency") or {}, Mapping) else b.get("latency")
    for old, new in _OLD_LATENCY_KEYS.items():
        if old in b:
            if isinstance(lat, dict):
                lat.setdefault(new, b[old])
            del b[old]
    if lat:
        b["latency"] = lat
    return build(BudgetConfig, b, "budgets")


def parse_study(raw: Any, source: str | None = None, record: bool = False) -> Study:
    """A validated Study. ``record``: the study.yaml of a finished run (``Run.study_config``), read for its
    settings: its space is not built again, and one this version cannot parse is None."""
    if not isinstance(raw, Mapping):
        raise StudyError("study", f"expected a mapping at the top level, got {type(raw).__name__}")
    allowed = {"name", "description", "space", "data", "proxy", "budgets", "search", "resources", "output", "fidelity",
               "tracking", "baselines", "analysis"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise StudyError(unknown[0], f"unknown section; allowed: {', '.join(sorted(allowed))}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise StudyError("name", f"{name!r}: give a name of letters, digits, '_', '-', '.' (at most 64)")
    try:
        space = _parse_space(raw.get("space"))
    except StudyError:
        if not record:
            raise
        space = None
    try:
        data = build(DataConfig, _section(raw, "data"), "data")
        proxy = build(TrainConfig, _section(raw, "proxy"), "proxy")
        budgets = _budgets(raw)
        search = build(SearchConfig, _section(raw, "search"), "search")
        resources = build(ResourceConfig, _section(raw, "resources"), "resources")
        fidelity = build(FidelityConfig, _section(raw, "fidelity"), "fidelity") if raw.get("fidelity") is not None \
            else None
        tracking = build(TrackingConfig, _section(raw, "tracking"), "tracking")
        analysis = build(AnalysisConfig, _section(raw, "analysis"), "analysis")
    except ConfigError as e:
        raise StudyError(e.field_path, str(e).split(": ", 1)[1]) from None
    if search.mode == "scaling" and search.sampler != "grid":
        raise StudyError("search.sampler", f"{search.sampler!r}: a scaling study (search.mode: scaling) measures "
                                           f"every grid point; use sampler: grid")
    try:
        baselines = parse_baselines(raw.get("baselines"))
    except BaselineError as e:
        raise StudyError(e.field_path, str(e).split(": ", 1)[1]) from None
    if baselines and budgets.latency.source != "measured":
        raise StudyError("baselines", "baselines need budgets.latency.source: measured (a calibration table "
                                      "predicts lkscale blocks only)")
    output = raw.get("output") or os.path.join("runs", name)
    if not isinstance(output, str):
        raise StudyError("output", f"{output!r}: give a folder path")
    study = Study(name=name, description=str(raw.get("description", "")), space=space, data=data, proxy=proxy,
                  budgets=budgets, search=search, resources=resources, output=output, source=source,
                  raw_space=copy.deepcopy(dict(raw.get("space") or {})), fidelity=fidelity,
                  tracking=tracking, baselines=baselines, analysis=analysis)
    if not record:
        check_space_builds(study)
    return study


def check_space_builds(study: Study, limit: int = 512) -> None:
    """Statically invalid knobs (a depth of 0, a fractional width, DCN groups that do not divide the width,
    an unsupported stem stride, an unknown re-param branch) fail here, when the study loads, not after
    Ray starts: every grid point (up to ``limit``, else a seeded sample) is built as an ArchSpec (no
    model, no cost) and a knob value that never builds a valid network is named."""
    try:
        g = grid(study.space)
    except ValueError:  # continuous ranges: check the categorical part only, at the range's low end
        g = {}
    points = grid_points(g, limit)
    errors: dict[str, str] = {}
    ok_values: set = set()
    for params, cand in zip(points, (candidate(study.space, p, study.data.input_size) for p in points)):
        if cand.spec is None:
            errors.setdefault(cand.error or "invalid", str(params))
        else:
            ok_values.update(params.items())
    if not ok_values and errors:
        first = next(iter(errors))
        raise StudyError("space", f"no point of the space builds a valid network: {first}")
    for name, choices in g.items():  # a choice that never builds anything is a static error too
        for c in choices:
            if (name, c) not in ok_values and len(points) < limit:
                bad = next((e for e, p in errors.items() if f"'{name}': {c!r}" in p), "never builds a network")
                if "kernel_clip: reject" in bad:
                    continue  # asked for: such points are recorded infeasible
                raise StudyError(f"space.{name}", f"choice {c} never builds a valid network: {bad}")


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
    _check_blocks_and_kernels(knobs, stages, patterns)
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


def _check_blocks_and_kernels(knobs: dict, stages: list, patterns: dict) -> None:
    """Block names must be known and kernels odd, wherever a knob sets them."""
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
