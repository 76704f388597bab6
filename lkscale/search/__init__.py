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
import importlib

# Loaded on first use (PEP 562), so that a Tune trial importing ``lkscale.search.trainable`` does not pay for
# the driver, Optuna and timm at every trial start (~4 s of CPU per trial on the reference machine).
_EXPORTS = {"check_budgets_feasible": "checks", "check_data": "checks", "check_resources": "checks",
            "space_specs": "checks", "front_table": "driver", "prepare": "driver", "run_study": "driver",
            "data_stage_payload": "staging", "node_data": "staging", "node_id": "staging",
            "optuna_storage": "storage", "write_summary": "summary"}

__all__ = ["run_study", "prepare", "front_table", "write_summary", "check_data", "check_budgets_feasible",
           "check_resources", "space_specs", "data_stage_payload", "node_data", "node_id", "optuna_storage"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"lkscale.search.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lkscale.search' has no attribute {name!r}")
