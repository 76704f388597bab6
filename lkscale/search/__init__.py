"""Run a study: Ray Tune schedules proxy training, Optuna samples two objectives (accuracy up, latency down).

Modules, in the order a candidate meets them:
- ``checks``: data, budgets and resources, before Ray starts;
- ``objective``: Optuna's define-by-run function — sample, build, cost (latency measured side by side);
- ``ledger``: which architectures, replicates and confirmation runs are owed; duplicates never retrain;
- ``searcher``: OptunaSearch that serves the ledger and tells Optuna through its public API;
- ``trainable``: the Tune function trainable (common random numbers per replicate);
- ``staging``: data through the object store on clusters;
- ``recorder`` / ``progress``: trials.csv and the live progress line;
- ``resume``: reconcile the record after an interruption; ``confirm``: racing; ``summary``: final numbers;
- ``tuning``: Ray and the Tuner; ``driver``: ``run_study``.
Nothing here is imported by the floors below (model, cost, train); Ray is imported only by ``tuning``,
``searcher`` and ``recorder`` (and lazily by ``staging``/``trainable``).
"""
from lkscale.search.checks import check_budgets_feasible, check_data, check_resources, space_specs
from lkscale.search.driver import front_table, prepare, run_study
from lkscale.search.staging import data_stage_payload, node_data, node_id
from lkscale.search.storage import optuna_storage
from lkscale.search.summary import write_summary

__all__ = ["run_study", "prepare", "front_table", "write_summary", "check_data", "check_budgets_feasible",
           "check_resources", "space_specs", "data_stage_payload", "node_data", "node_id", "optuna_storage"]
