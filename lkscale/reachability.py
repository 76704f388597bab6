"""Which choices of a space can build a network at all: a block family or a knob value no point reaches.

A space can name a choice that never builds: MogaNet blocks need kernels of at least 7 (their
dilation-3 branch), but at 32 px with a stride-2 stem the last stage's 2x2 map clips every kernel to 3,
so no Moga network exists in such a space and every Moga draw is recorded infeasible — a trial of the
budget spent on nothing. :func:`unreachable` expands the space with the search's own expansion
(``lkscale.space.grid`` / ``candidate``: the same code the sampler's draws go through; every point when
there are at most ``limit``, else a seeded sample) and returns each (knob, value) that some point
chooses but no point builds, with the most common reason. A knob counts as chosen only where it
applies (DCN groups on dcnv3 stages only), as in ``lkscale.space``.

``lkscale plan`` prints each as a warning; ``lkscale search`` refuses to start (exit 2) when the
expansion was exhaustive — except for choices rejected only because ``space.kernel_clip: reject`` asks
for it, which it warns about.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from lkscale.space import candidate, decode, grid
from lkscale.study import Study, StudyError

LIMIT = 20_000    # enumerate every point up to this many (864 points of studies/pareto.yaml take ~0.2 s)
SAMPLES = 4_000   # otherwise this many seeded random points


@dataclass(frozen=True)
class Unreachable:
    knob: str          # "block", "kernel", "s3.block", ...
    value: Any         # the choice as the study gives it
    points: int        # points of the expansion that choose it (none builds)
    reason: str        # the most common reason, with the clipping that led to it
    by_reject: bool    # every such point was rejected because kernel_clip: reject asks for it

    @property
    def what(self) -> str:
        stage, _, knob = self.knob.rpartition(".")
        where = f"stage {stage[1:]} " if stage else ""
        if knob == "block":
            return f"{where}block family {self.value}"
        return f"{where}choice {knob}: {list(self.value) if isinstance(self.value, tuple) else self.value}"

    def describe(self) -> str:
        return f"{self.what}: none of the {self.points} point(s) that choose it builds a network ({self.reason})"


@dataclass(frozen=True)
class Reachability:
    unreachable: list
    points: int
    exhaustive: bool   # every point of the space was expanded (else a sample: a choice may just be rare)

    @property
    def how(self) -> str:
        return f"all {self.points} points" if self.exhaustive else f"{self.points} random points"


def _points(study: Study, limit: int, samples: int) -> tuple[list[dict], bool]:
    """Every point (at most ``limit``), else ``samples`` seeded random ones; continuous ranges are sampled."""
    sp = study.space
    ranges = {k: kn for k, kn in sp.knobs.items() if kn.low is not None}
    g = grid(dataclasses.replace(sp, knobs={k: kn for k, kn in sp.knobs.items() if kn.low is None}))
    total = math.prod(len(v) for v in g.values())
    if total <= limit and not ranges:
        return [dict(zip(g, combo)) for combo in itertools.product(*g.values())], True
    rng = random.Random(0)
    return [{**{k: rng.choice(v) for k, v in g.items()}, **{k: rng.uniform(kn.low, kn.high) for k, kn in ranges.items()}}
            for _ in range(samples)], False


def _knob(study: Study, name: str):
    sp = study.space
    if name.startswith("s") and "." in name:
        i, _, k = name.partition(".")
        return sp.stages[int(i[1:])][k]
    return sp.knobs.get(name) or sp.patterns.get(name)


def unreachable(study: Study, limit: int = LIMIT, samples: int = SAMPLES) -> Reachability:
    """Every (knob, value) some point of the space chooses and no point builds (see the module docstring)."""
    points, exhaustive = _points(study, limit, samples)
    chosen: Counter = Counter()
    built: set = set()
    reasons: dict = {}
    for p in points:
        c = candidate(study.space, p, study.data.input_size)
        for kv in c.params.items():
            chosen[kv] += 1
            if c.spec is not None:
                built.add(kv)
            else:
                reasons.setdefault(kv, Counter())[_reason(c)] += 1
    out = []
    for (name, raw), n in chosen.items():
        if (name, raw) in built:
            continue
        knob = _knob(study, name)
        try:
            value = decode(knob, raw) if knob is not None else raw
        except KeyError:
            value = raw
        why = reasons[(name, raw)]
        reason = why.most_common(1)[0][0]
        out.append(Unreachable(name, value, n, reason, all("kernel_clip: reject" in r for r in why)))
    out.sort(key=lambda u: (u.knob != "block", u.knob, str(u.value)))
    return Reachability(out, len(points), exhaustive)


def _reason(c) -> str:
    """A point's error with the clipping of the stage it names: ``stage 3: kernel 7 -> 3 (2x2 map), and
    moga's largest (dilation-3) kernel must be >= 7``."""
    err = c.error or "invalid"
    m = re.match(r"candidate\.stages\[(\d+)\]\.(\w+): (.*?): (.*)$", err)
    if not m:
        return err
    stage, field, value, why = m.groups()
    clip = next((n for n in c.notes if n.startswith(f"stage {stage}: kernel")), None) if field == "kernel" else None
    cm = re.search(r"-> (\d+) \((\d+x\d+) map\)", clip or "")
    what = f"stage {stage}'s {cm.group(2)} map clips kernels to {cm.group(1)}" if cm else f"stage {stage}: {field} {value}"
    return f"{what}, and {why}"


def check_reachable(study: Study) -> list[str]:
    """For ``lkscale search``: StudyError (exit 2) naming every choice no point builds, when every point
    was expanded; returns warning lines for the rest (a sampled expansion, kernel_clip: reject)."""
    r = unreachable(study)
    hard = [u for u in r.unreachable if r.exhaustive and not u.by_reject]
    if hard:
        raise StudyError("space." + hard[0].knob, "; ".join(u.describe() for u in hard) +
                         f" — every such draw would be recorded infeasible; remove it from the space or give it a "
                         f"space where it builds (`lkscale plan` lists the points)")
    return [f"warning: {u.describe()}" + ("" if r.exhaustive else f" (in {r.how} of the space)")
            for u in r.unreachable]


__all__ = ["Unreachable", "Reachability", "unreachable", "check_reachable", "LIMIT", "SAMPLES"]
