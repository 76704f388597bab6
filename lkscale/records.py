"""The records of a run folder as files: the ``trials.csv`` and ``fidelity.csv`` schemas, their cells, reading
rows with every damaged row reported (:class:`Damage`), JSON records, and atomic writes.

Path-based: which file of a run folder is which is :mod:`lkscale.rundir`'s business (it re-exports every
public name here, so callers import them from there).

- A damaged row (cut short, extra fields, a cell that is not what its column holds, the file ending inside
  it) or a JSON record that does not parse is never silently dropped: ``strict`` raises :class:`RunDirError`
  naming the file and the place; otherwise it is left out and added to the caller's ``damaged`` list (or
  logged when the caller collects none).
- :func:`atomic_write`: readers never see half a file; a failed write leaves the previous version.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("lkscale.rundir")

FIDELITY_COLUMNS = ["name", "role", "state", "proxy_acc", "high_acc", "latency_ms", "epochs", "train_per_class",
                    "val_n", "seconds", "error", "val_acc_epochs", "kernels", "blocks", "spec"]

STATES = ("complete", "pruned", "infeasible", "failed", "running")
CSV_COLUMNS = ["trial_id", "number", "name", "state", "blocks", "kernels", "depths", "widths", "dcn_groups",
               "reparam", "stem_stride", "params", "deploy_params", "flops", "latency_ms", "val_acc",
               "val_acc_epochs", "epochs_done", "epochs_budget", "seconds", "node", "error", "notes", "seed", "spec",
               "replicate", "val_n", "latency_low_ms", "latency_high_ms", "latency_runtime", "latency_source",
               "latency_search_ms", "device", "precision", "latency_node", "role"]
JSON_COLS = ("blocks", "kernels", "depths", "widths", "dcn_groups", "reparam", "val_acc_epochs")
FLOAT_COLS = ("latency_ms", "val_acc", "seconds", "latency_low_ms",
              "latency_high_ms", "latency_search_ms")
INT_COLS = ("params", "deploy_params", "flops", "number", "epochs_done", "epochs_budget", "stem_stride", "seed", "replicate", "val_n")


class RunDirError(ValueError):
    """The folder given is missing or is not a search run folder."""


@dataclass(frozen=True)
class Damage:
    """One damaged part of a record: ``file`` (path), ``where`` (``row 4 (line 5)``, ``line 3 column 7``),
    ``reason``; ``key``: the row's ``trial_id`` (trials.csv) or ``name`` (fidelity.csv) when it can be read."""
    file: str
    where: str
    reason: str
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.where} is damaged ({self.reason})"


_writes = 0  # atomic writes by this process (``LKSCALE_FAULT=enospc-after:N`` counts them)


def atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (readers never see half a file).
    A write that fails (a full disk, a quota) leaves the previous file as it was, removes the temporary one,
    and raises OSError saying which file and that its previous version is intact.

    ``LKSCALE_FAULT=enospc-after:N`` (tests only): every write after the first N of this process fails
    with ENOSPC, half-way through, as a full disk would."""
    global _writes
    tmp = f"{path}.{os.getpid()}.tmp"
    _writes += 1
    fault = os.environ.get("LKSCALE_FAULT", "")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            if fault.startswith("enospc-after:") and _writes > int(fault.split(":")[1]):
                f.write(text[: len(text) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        state = f"the previous {os.path.basename(path)} is intact" if os.path.exists(path) else "nothing was written"
        raise OSError(e.errno, f"could not write {path}: {e.strerror or e}; {state}") from None


@dataclass
class Trial:
    row: dict

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["row"][key]
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        v = self.row.get(key)
        return default if v is None else v


# ----------------------------------------------------------------------------------------- reading
def parse_value(col: str, raw: str | None) -> Any:
    """One ``trials.csv`` cell as its Python value (JSON lists, floats, ints; empty/nan -> None)."""
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "" or raw.lower() in ("nan", "none", "null"):
        return [] if col == "val_acc_epochs" else None
    if col in JSON_COLS:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return None
    if col in FLOAT_COLS:
        try:
            v = float(raw)
        except ValueError:
            return None
        return None if math.isnan(v) else v
    if col in INT_COLS:
        try:
            return int(float(raw))
        except ValueError:
            return None
    return raw


def _cell_problem(col: str, raw: str | None, kind: str | None = None) -> str | None:
    """Why one non-empty cell cannot be what its column holds (None: it can)."""
    kind = kind or col
    raw = (raw or "").strip()
    if raw == "" or raw.lower() in ("nan", "none", "null"):
        return None
    if kind in JSON_COLS:
        try:
            json.loads(raw)
        except json.JSONDecodeError:
            return f"{col} {raw[:24]!r} is not a JSON list"
    elif kind in FLOAT_COLS or kind in INT_COLS:
        try:
            float(raw)
        except ValueError:
            return f"{col} {raw[:24]!r} is not a number"
    return None


def _read_rows(path: str, required: tuple[str, ...], kinds: dict[str, str], damaged: list[Damage] | None,
               strict: bool, key: str, valid_state=None) -> list[dict]:
    """Rows of a CSV record as parsed dicts; a damaged row (cut short, extra fields, a cell that is not what
    its column holds, the file ending inside it) raises RunDirError naming it when ``strict``, else is left
    out and added to ``damaged``."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        text = f.read()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        header = []
    missing = [c for c in required if c not in header]
    if missing:
        raise RunDirError(f"{path}: not a {os.path.basename(path)} table (missing column {missing[0]!r})")
    records, line = [], reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            records.append((line + 1, None, f"unreadable ({e}); the rest of the file is left out"))
            break
        if fields:
            records.append((line + 1, fields, None))
        line = reader.line_num
    cut = bool(text) and not text.endswith(("\n", "\r"))  # the file ends inside its last row
    out: list[dict] = []
    for n, (first, fields, problem) in enumerate(records, 1):
        raw = dict(zip(header, fields or []))
        if problem is None:
            if len(fields) < len(header):
                problem = f"cut short: {len(fields)} of {len(header)} fields"
            elif len(fields) > len(header):
                problem = f"{len(fields)} fields, {len(header)} expected"
            elif cut and n == len(records):
                problem = "the file ends inside this row"
            else:
                problem = next((p for p in (_cell_problem(c, raw.get(c), kinds.get(c)) for c in header) if p), None)
                if problem is None and valid_state is not None:
                    problem = valid_state(raw)
        if problem:
            _damage(Damage(path, f"row {n} (line {first})", problem, raw.get(key) or None), damaged, strict)
            continue
        out.append({k: parse_value(kinds.get(k, k), v) for k, v in raw.items()})
    return out


def _damage(d: Damage, damaged: list[Damage] | None, strict: bool) -> None:
    if strict:
        raise RunDirError(str(d))
    if damaged is None:  # a caller that does not collect: never silently dropped
        log.warning("%s; left out", d)
    else:  # the caller says it (report: a warning; resume: rebuilt or an error)
        damaged.append(d)


def _trial_state_problem(raw: dict) -> str | None:
    if not (raw.get("name") or "").strip() and (raw.get("state") or "").strip() != "infeasible":
        return "no name"
    if (raw.get("state") or "").strip() not in STATES:
        return f"state {raw.get('state', '')[:24]!r} is not one of {', '.join(STATES)}"
    return None


def read_trials_csv(path: str, damaged: list[Damage] | None = None, strict: bool = False) -> list[Trial]:
    """Rows of a ``trials.csv``. A damaged row is never silently dropped: ``strict`` raises RunDirError
    naming the file and the row; otherwise it is left out, logged, and added to ``damaged``."""
    rows = _read_rows(path, ("name", "state"), {}, damaged, strict, "trial_id", _trial_state_problem)
    return [Trial(r) for r in rows]


def read_fidelity_csv(path: str, damaged: list[Damage] | None = None, strict: bool = False) -> list[dict]:
    """Rows of a ``fidelity.csv``; damaged rows as :func:`read_trials_csv`."""
    kind = {"val_acc_epochs": "val_acc_epochs", "kernels": "kernels", "blocks": "blocks", "proxy_acc": "val_acc",
            "high_acc": "val_acc", "latency_ms": "latency_ms", "seconds": "seconds", "epochs": "epochs_done",
            "train_per_class": "params", "val_n": "val_n"}  # parse as the trials.csv column of that kind
    named = lambda raw: None if (raw.get("name") or "").strip() else "no name"
    return _read_rows(path, ("name",), kind, damaged, strict, "name", named)


def read_json(path: str, damaged: list[Damage] | None, strict: bool) -> dict:
    """A JSON object record ({} when the file is not there); not an object or not valid JSON: damaged."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            out = json.load(f)
        if isinstance(out, dict):
            return out
        d = Damage(path, "the whole file", f"a JSON {type(out).__name__}, not an object")
    except json.JSONDecodeError as e:
        d = Damage(path, f"line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}")
    _damage(d, damaged, strict)
    return {}


def keep_damaged(path: str) -> str:
    """Copy a damaged record aside (``<file>.damaged-<UTC time>``) before it is rewritten; returns the copy."""
    dest = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    shutil.copyfile(path, dest)
    return dest


# ----------------------------------------------------------------------------------------- writing
def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return "" if v is None else v


def write_trials_csv(path: str, rows: list[dict]) -> None:
    """Write a ``trials.csv`` (atomically): rows sorted by Optuna trial number, then replicate."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    key = lambda r: (int(float(r.get("number") or 0)), int(float(r.get("replicate") or 0)), str(r.get("trial_id")))
    for r in sorted(rows, key=key):
        w.writerow({k: _cell(r.get(k)) for k in CSV_COLUMNS})
    atomic_write(path, buf.getvalue())


def write_fidelity_csv(path: str, rows: list[dict]) -> None:
    """Write a ``fidelity.csv`` (atomically; rows in the order given)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIDELITY_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in FIDELITY_COLUMNS})
    atomic_write(path, buf.getvalue())


__all__ = ["STATES", "CSV_COLUMNS", "FIDELITY_COLUMNS", "RunDirError", "Damage", "atomic_write", "Trial", "parse_value",
           "read_trials_csv", "read_fidelity_csv", "read_json", "keep_damaged", "write_trials_csv", "write_fidelity_csv"]
