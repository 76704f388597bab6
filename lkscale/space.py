"""Search space -> ArchSpec, define-by-run.

``suggest(trial, space, input_size)`` asks an Optuna trial for every knob that has a choice (and only
where it applies: DCN groups only on dcnv3 stages, re-param branches only on replk/convnext stages)
and returns the sampled parameters; ``candidate(space, params, input_size)`` turns parameters back
into an ArchSpec. Both run the same code, so a spec rebuilt from stored parameters is the one sampled.

Kernels larger than a stage's map can use are clipped to ``2H-1`` (or rejected, per
``space.kernel_clip``): on an HxW map only the central (2H-1)x(2W-1) taps ever touch the image, so a
bigger kernel trains the same function with dead taps, and two names would train the same thing.
Re-param branches not smaller than the (clipped) kernel are dropped.

The one expansion of a space into networks: ``grid``/``grid_points`` (every combination of the
choices), ``sample_points`` (seeded random draws through Optuna's random sampler, for spaces with
continuous ranges or a sampler other than the grid), ``expand`` (either, as asked) and
``distinct_specs``; the search's budget check, ``lkscale plan``, the study's load-time check, the
latency CLI and the benchmarks all use them.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import optuna

from lkscale.spec import ArchSpec, Branch, SpecError


# A knob is fixed (a value), a choice (a list, or {choices: [...]}) or a range ({low, high[, step][, log]});
# ``lkscale.study`` parses a study's ``space`` section into these.
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



def encode(v: Any) -> Any:
    """Optuna categorical choices must be primitives: tuples become JSON strings."""
    return json.dumps(_thaw(v)) if isinstance(v, tuple) else v


def _thaw(v: Any) -> Any:
    return [_thaw(x) for x in v] if isinstance(v, tuple) else v


def decode(knob: Knob, raw: Any) -> Any:
    for c in knob.choices:
        if encode(c) == raw:
            return c
    if knob.low is not None:
        return raw
    raise KeyError(raw)


@dataclass
class Candidate:
    spec: ArchSpec | None
    params: dict
    notes: list = field(default_factory=list)  # e.g. kernels clipped
    error: str | None = None  # set when the sampled point is not a valid network

    @property
    def name(self) -> str | None:
        return self.spec.name if self.spec else None


def map_sizes(stem_stride: int, num_stages: int, input_size: int) -> list[int]:
    h = math.ceil(input_size / stem_stride)
    sizes = []
    for i in range(num_stages):
        if i:
            h = math.ceil(h / 2)
        sizes.append(h)
    return sizes


def _walk(space: SpaceConfig, get: Callable[[str, Knob], Any], input_size: int) -> Candidate:
    params: dict = {}

    def pick(name: str, knob: Knob):
        val = get(name, knob)
        if not knob.fixed:
            params[name] = encode(val) if knob.low is None else val
        return val

    base = copy.deepcopy(space.base) if space.base else {"stages": [{} for _ in range(space.num_stages)]}
    stages = [dict(s) for s in base["stages"]]
    n = len(stages)
    g, pat = space.knobs, space.patterns
    stem = dict(base.get("stem") or {})
    if "stem_stride" in g:
        stem["stride"] = pick("stem_stride", g["stem_stride"])
    stem.setdefault("stride", 4)
    # network-wide knobs, then whole-network patterns, then per-stage knobs
    for k in ("block", "depth", "width", "kernel", "ffn_ratio"):
        if k in g:
            v = pick(k, g[k])
            for s in stages:
                s[k] = v
    for k, key in (("depths", "depth"), ("widths", "width"), ("kernels", "kernel")):
        if k in pat:
            for s, v in zip(stages, pick(k, pat[k])):
                s[key] = v
    for i, st in enumerate(space.stages):
        for k in ("block", "depth", "width", "kernel", "ffn_ratio"):
            if k in st:
                stages[i][k] = pick(f"s{i}.{k}", st[k])
    # conditional knobs
    for i, s in enumerate(stages):
        per = space.stages[i] if i < len(space.stages) else {}
        if s.get("block") == "dcnv3":
            if "dcn_groups" in per:
                s["dcn_groups"] = pick(f"s{i}.dcn_groups", per["dcn_groups"])
            elif "dcn_groups" in g:
                s["dcn_groups"] = pick("dcn_groups", g["dcn_groups"])
            elif not s.get("dcn_groups"):
                w = s.get("width", 16)
                s["dcn_groups"] = next(d for d in (w // 16, 8, 4, 2, 1) if d >= 1 and w % d == 0)
        else:
            s.pop("dcn_groups", None)
        if s.get("block") in ("replk", "convnext"):
            if "reparam" in per:
                s["reparam"] = list(pick(f"s{i}.reparam", per["reparam"]))
            elif "reparam" in g:
                s["reparam"] = list(pick("reparam", g["reparam"]))
        else:
            s.pop("reparam", None)
    notes, error = _clip_kernels(space, stages, map_sizes(stem["stride"], n, input_size))
    if error:
        return Candidate(None, params, notes, error)
    base["stages"] = stages
    base["stem"] = stem
    base.setdefault("drop_path_rate", space.drop_path_rate)
    if space.layer_scale is not None:
        base["layer_scale"] = space.layer_scale
    base.pop("name", None)
    try:
        spec = ArchSpec.from_dict(base, where="candidate")
    except SpecError as e:
        return Candidate(None, params, notes, str(e))
    return Candidate(spec, params, notes)


def _clip_kernels(space: SpaceConfig, stages: list, sizes: list) -> tuple[list, str | None]:
    """Clip each stage's kernel to the 2H-1 taps its map can use (or reject), drop branches not smaller
    than the kernel; returns (notes, error)."""
    notes = []
    for i, (s, h) in enumerate(zip(stages, sizes)):
        useful = 2 * h - 1
        k = s.get("kernel")
        if isinstance(k, int) and k > useful:
            if space.kernel_clip == "reject":
                return notes, (f"stage {i} kernel {k} exceeds the {useful}x{useful} taps "
                               f"a {h}x{h} map can use (kernel_clip: reject)")
            notes.append(f"stage {i}: kernel {k} -> {useful} ({h}x{h} map)")
            s["kernel"] = k = useful
        if s.get("reparam"):
            try:
                kept = [b for b in s["reparam"] if Branch.parse(b, f"stages[{i}].reparam").span < k]
            except SpecError as e:
                return notes, str(e)
            if len(kept) != len(s["reparam"]):
                notes.append(f"stage {i}: branches {[b for b in s['reparam'] if b not in kept]} dropped (not smaller than kernel {k})")
            s["reparam"] = kept
    return notes, None


def suggest(trial, space: SpaceConfig, input_size: int) -> Candidate:
    """Sample a candidate with an Optuna trial (define-by-run)."""
    def get(name: str, knob: Knob):
        if knob.fixed:
            return knob.value
        if knob.low is not None:
            return trial.suggest_float(name, knob.low, knob.high, log=knob.log)
        raw = trial.suggest_categorical(name, [encode(c) for c in knob.choices])
        return decode(knob, raw)

    return _walk(space, get, input_size)


def candidate(space: SpaceConfig, params: dict, input_size: int) -> Candidate:
    """Rebuild the candidate for stored parameters (the inverse of ``suggest``)."""
    def get(name: str, knob: Knob):
        if knob.fixed:
            return knob.value
        if knob.low is not None:
            return params[name]
        return decode(knob, params[name])

    return _walk(space, get, input_size)


def grid(space: SpaceConfig) -> dict[str, list]:
    """Every categorical knob with its encoded choices (for Optuna's GridSampler)."""
    out: dict[str, list] = {}
    for k, kn in space.knobs.items():
        if not kn.fixed:
            out[k] = [encode(c) for c in kn.choices]
    for k, kn in space.patterns.items():
        if not kn.fixed:
            out[k] = [encode(c) for c in kn.choices]
    for i, st in enumerate(space.stages):
        for k, kn in st.items():
            if not kn.fixed:
                out[f"s{i}.{k}"] = [encode(c) for c in kn.choices]
    if any(kn.low is not None for kn in space.knobs.values()):
        raise ValueError("grid sampler needs choices or ranges with a step, not continuous ranges")
    return out


def size(space: SpaceConfig) -> int:
    """Number of distinct points (before clipping merges some)."""
    return math.prod(len(v) for v in grid(space).values())


def grid_points(g: Mapping[str, list], limit: int | None = None) -> list[dict]:
    """Every combination of a ``grid(space)`` as parameters, in grid order; more than ``limit``: a seeded
    sample of ``limit`` of the first ``8 * limit``."""
    if limit is None:
        return [dict(zip(g, combo)) for combo in itertools.product(*g.values())]
    combos = list(itertools.islice(itertools.product(*g.values()), limit * 8))
    if len(combos) > limit:
        combos = random.Random(0).sample(combos, limit)
    return [dict(zip(g, combo)) for combo in combos]


def sample_points(space: SpaceConfig, input_size: int, samples: int, seed: int = 0) -> list[tuple[dict, Candidate]]:
    """``samples`` seeded random draws (Optuna's random sampler on a scratch study) as (parameters, candidate)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a scratch study: no "created in memory" line
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    optuna.logging.set_verbosity(level)
    out = []
    for _ in range(samples):
        t = scratch.ask()
        out.append((t.params, suggest(t, space, input_size)))
    return out


def expand(space: SpaceConfig, input_size: int, use_grid: bool | None = None, samples: int = 24,
           seed: int = 0) -> list[tuple[dict, Candidate]]:
    """The space's points as (parameters, candidate): every grid point (``use_grid`` True), ``samples`` seeded
    random draws (False), or the grid where the space is one and draws where it has continuous ranges (None)."""
    if use_grid is None:
        try:
            g = grid(space)
        except ValueError:
            return sample_points(space, input_size, samples, seed)
    elif use_grid:
        g = grid(space)
    else:
        return sample_points(space, input_size, samples, seed)
    return [(p, candidate(space, p, input_size)) for p in grid_points(g)]


def distinct_specs(points: list[tuple[dict, Candidate]], deploy: bool = False) -> dict[str, ArchSpec]:
    """The distinct networks among expanded points, by name (first seen first); ``deploy``: re-param branches
    dropped (the deploy form's network, what latency measures)."""
    out: dict[str, ArchSpec] = {}
    for _, c in points:
        if c.spec is not None:
            spec = c.spec.without_reparam() if deploy else c.spec
            out.setdefault(spec.name, spec)
    return out
