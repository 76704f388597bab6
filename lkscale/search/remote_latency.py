"""Latency measured where the model will run: ``budgets.latency.resources`` names a Ray resource only the
target kind of node declares (``{"edge_cpu": 1}``); the measurements run there as Ray tasks.

The node is reserved for measuring for the whole search: one placement group holds all its CPUs and the
resource (:func:`reserve`, before anything is costed), and every measurement — the side-by-side rounds
of :meth:`lkscale.search.objective.Objective.measure` and the final re-measurement — is a task in it that
asks for all of them. So nothing of ours trains there while it measures (and no trial can hold that
node's CPUs while the driver waits for a measurement, which would stop the search). Trials train on the
other nodes; a cluster where the latency node is the only one a trial fits on is an error at the start,
as is a cluster where no node declares the resource. Each result names the node it ran on (node id, host
name, address): ``latency_node`` in ``trials.csv``.
"""
from __future__ import annotations

import json
import socket
from typing import Callable, Sequence

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from lkscale.baselines import spec_from_json
from lkscale.config import LatencyConfig, from_dict, to_dict
from lkscale.cost.measure import latency_of
from lkscale.spec import ArchSpec
from lkscale.study import Study, StudyError

RESERVE_TIMEOUT_S = 120.0  # waiting for the node's CPUs to be free (other jobs on the cluster)
FIELD = "budgets.latency.resources"


def where() -> str:
    """This process's Ray node: ``<node id (12 hex)> <host name> <address>``."""
    return (f"{ray.get_runtime_context().get_node_id()[:12]} {socket.gethostname()} "
            f"{ray.util.get_node_ip_address()}")


@ray.remote(max_retries=0)
def _measure(specs: list[str], cfg: dict) -> tuple[dict, str]:
    res = latency_of([spec_from_json(s) for s in specs], from_dict(LatencyConfig, cfg))  # a baseline, too
    return res, where()


class RemoteLatency:
    """``runner(specs, cfg) -> ({spec name: LatencyResult}, node)``: measured on the reserved node."""

    def __init__(self, pg, cpus: float, resources: dict):
        self.pg, self.cpus, self.resources = pg, cpus, dict(resources)

    def __call__(self, specs: Sequence[ArchSpec], cfg: LatencyConfig) -> tuple[dict, str]:
        task = _measure.options(num_cpus=self.cpus, resources=self.resources,
                                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, 0))
        return ray.get(task.remote([s.to_json() for s in specs], to_dict(cfg)))

    def release(self) -> None:
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None


def _fits(node: dict, study: Study) -> bool:
    r, res = study.resources, node["Resources"]
    return res.get("CPU", 0) >= r.cpus_per_trial and res.get("GPU", 0) >= r.gpus_per_trial


def reserve(study: Study, say: Callable[[str], None], timeout: float = RESERVE_TIMEOUT_S) -> RemoteLatency:
    """Reserve the node that declares the study's latency resource (Ray must be running)."""
    want = study.latency.resources or {}
    if study.latency.source != "measured":
        raise StudyError(FIELD, f"{want}: only measured latency runs on a node (budgets.latency.source is "
                                f"{study.latency.source!r})")
    alive = [n for n in ray.nodes() if n.get("Alive")]
    nodes = [n for n in alive if all(n["Resources"].get(k, 0) >= v for k, v in want.items())]
    if not nodes:
        declared = sorted({k for n in alive for k in n["Resources"] if k not in ("CPU", "GPU", "memory",
                           "object_store_memory") and not k.startswith(("node:", "accelerator_type:"))})
        raise StudyError(FIELD, f"{json.dumps(want)}: no node of the Ray cluster declares it (custom resources "
                                f"declared: {', '.join(declared) or 'none'}); start the target node with "
                                f"`ray start --address=... --resources='{json.dumps(want)}'`")
    node = max(nodes, key=lambda n: (n["Resources"].get("CPU", 0), n["NodeID"]))
    cpus = float(node["Resources"].get("CPU", 0))
    if cpus < 1:
        raise StudyError(FIELD, f"{json.dumps(want)}: the node that declares it has no CPU to measure with")
    if not [n for n in alive if n["NodeID"] != node["NodeID"] and _fits(n, study)]:
        raise StudyError(FIELD, f"{json.dumps(want)}: the node that declares it is the only one a trial fits on; "
                                f"it is reserved for measuring latency during the search, so nothing could train")
    pg = placement_group([{"CPU": cpus, **want}], strategy="STRICT_PACK", name="")
    if not pg.wait(timeout):
        remove_placement_group(pg)
        raise StudyError(FIELD, f"{json.dumps(want)}: could not reserve all {cpus:g} CPUs of the node that "
                                f"declares it within {timeout:.0f} s (something else runs there)")
    say(f"latency: measured on the node with {json.dumps(want)} ({node['NodeManagerAddress']}, "
        f"node {node['NodeID'][:12]}), all its {cpus:g} CPU(s) reserved for measuring during the search")
    return RemoteLatency(pg, cpus, want)
