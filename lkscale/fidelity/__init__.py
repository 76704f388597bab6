"""Does the proxy rank like longer training? Retrain a sample of a finished search at a higher fidelity.

Modules, in the order a run meets them:
- ``sample``: the stratified sample (the proxy front, plus candidates spread over accuracy and latency);
- ``trainable``: the Tune trainable of one retrain (the search's own, into ``<run>/fidelity/``);
- ``run``: Ray Tune over the sample, resumable (finished retrains in ``fidelity.csv`` are kept);
- ``stats``: proxy vs high fidelity (tau, rho, top-k recall, front kept, hypervolume ratio, with
  bootstrap intervals) and the pruning rung vs the final proxy accuracy, from the run's learning curves;
- ``figure``: the markdown section and the scatter for the report.
Ray is imported only by ``run`` (lazily) and, inside a worker, by the search's trainable.
"""
from lkscale.fidelity.sample import stratified_sample
from lkscale.fidelity.stats import fidelity_statistics, rung_statistics

__all__ = ["stratified_sample", "fidelity_statistics", "rung_statistics"]
