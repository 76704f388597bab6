"""Where the Optuna study of a run lives: the run folder's journal file (default), another journal file,
or an RDB URL (a cluster's shared database)."""
from __future__ import annotations

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from lkscale.rundir import RunDir


def optuna_storage(run_dir: str, url: str | None = None):
    if url:
        return optuna.storages.RDBStorage(url) if "://" in url else JournalStorage(JournalFileBackend(url))
    return JournalStorage(JournalFileBackend(RunDir(run_dir).optuna_journal))
