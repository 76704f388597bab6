"""Checks that run before Ray starts: the data, the budgets, the resources. Each failure is one
``StudyError`` naming the study field; nothing expensive has started and nothing recorded is touched."""
from __future__ import annotations

import math
import os
from typing import Callable

import torch

from lkscale.config import COST_CLASSES, DataConfig
from lkscale.cost import count_flops, count_params
from lkscale.data import DataError, load_splits, resolve_data
from lkscale.model import build_model
from lkscale.reparam import reparameterize
from lkscale.space import Candidate, distinct_specs, expand
from lkscale.spec import ArchSpec
from lkscale.study import Study, StudyError


def check_data(study: Study, progress: Callable[[str], None] | None = None) -> DataConfig:
    """Find (or, where allowed, download) and decode the dataset once in the driver; returns the data
    settings with the concrete dataset and root, which every trial then reads."""
    try:
        data = resolve_data(study.data, progress)
        load_splits(DataConfig(**{**data.__dict__, "test_per_class": 0}))
    except DataError as e:  # name the study field the problem belongs to
        msg = str(e)
        raise StudyError("data" if msg.startswith("data.") else "data.root", msg) from None
    return data


def space_points(study: Study, samples: int = 24) -> list[tuple[dict, Candidate]]:
    """(parameters, candidate) for every grid point (grid sampler), else ``samples`` random draws seeded by the
    search's seed (``lkscale.space.expand``)."""
    return expand(study.space, study.data.input_size, use_grid=study.search.sampler == "grid", samples=samples,
                  seed=study.search.seed)


def space_specs(study: Study, samples: int = 24) -> dict[str, ArchSpec]:
    """Distinct networks of the space (see :func:`space_points`)."""
    points = space_points(study, samples)
    specs = distinct_specs(points)
    if not specs:
        raise StudyError("space", "no point of the space builds a valid network: " + (points[0][1].error if points else ""))
    return specs


def check_budgets_feasible(study: Study, samples: int = 24) -> None:
    """Fail fast (one clear error) when no candidate can meet the params/FLOPs budgets.

    Checks every grid point (grid sampler) or ``samples`` random points of the space, counting params
    and FLOPs only (cheap; latency is left to the search). Catches impossible budgets before Ray starts.
    """
    b = study.budgets
    if not (b.max_params or b.max_flops):
        return
    specs = space_specs(study, samples)
    best_p, best_f = math.inf, math.inf
    for spec in specs.values():
        model = build_model(spec, num_classes=COST_CLASSES)
        params = count_params(model)
        if b.max_params and params > b.max_params:
            best_p = min(best_p, params)
            continue
        flops = count_flops(reparameterize(model), study.latency.input_size)[0]
        if b.max_flops and flops > b.max_flops:
            best_f = min(best_f, flops)
            continue
        return  # at least one candidate fits
    which = "the whole grid" if study.search.sampler == "grid" else f"{len(specs)} sampled candidates"
    if best_p < math.inf and (not b.max_flops or best_f == math.inf):
        raise StudyError("budgets.max_params", f"{b.max_params:.4g} leaves no feasible candidate: the smallest of "
                                               f"{which} has {best_p:,} parameters")
    raise StudyError("budgets.max_flops", f"{b.max_flops:.4g} leaves no feasible candidate: the cheapest of {which} "
                                          f"needs {best_f:,} multiply-adds (at {study.latency.input_size} px)")


def check_resources(study: Study, cluster: dict | None = None) -> None:
    """A trial that asks for more CPUs or GPUs than the cluster (or this machine) has would wait forever."""
    have = cluster if cluster is not None else {"CPU": float(os.cpu_count() or 1), "GPU": float(_local_gpus())}
    r = study.resources
    if r.cpus_per_trial > have.get("CPU", 0):
        raise StudyError("resources.cpus_per_trial", f"{r.cpus_per_trial:g} CPUs per trial, but the cluster has "
                                                     f"{have.get('CPU', 0):g}: no trial could ever start")
    if r.gpus_per_trial > have.get("GPU", 0):
        raise StudyError("resources.gpus_per_trial", f"{r.gpus_per_trial:g} GPUs per trial, but the cluster has "
                                                     f"{have.get('GPU', 0):g}: no trial could ever start")


def _local_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
