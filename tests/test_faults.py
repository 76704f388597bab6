"""Faults injected on purpose, and what survives them: a small grid search with fixed learning curves
(tests/curves.py, so Ray Tune, Optuna, the recorder and resume run for real in seconds) is hit by a full
disk while writing its record, a second driver, SIGKILL of the driver (alone, or with its whole process
group as a lost node), SIGKILL of a trial worker and SIGINT; each run after a fault is ``--resume``. The
final record must equal an uninterrupted run's set of networks and replicates, nothing finished is trained
again, and Optuna agrees with ``trials.csv``. Also: a corrupted dataset cache is detected and rebuilt, a
trial over its memory limit fails alone.

Run as a script, this file is the driver under test: ``python tests/test_faults.py search STUDY --output
DIR [--resume] --no-report`` is ``lkscale search`` with the fixed-curve trainable.
``benchmarks/fault_injection.py`` runs the same scenarios at a larger count and writes
``benchmarks/results/faults.json``.
"""
from __future__ import annotations

import errno
import functools
import json
import mmap
import os
import random
import resource
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
KERNELS = [[3, 3, 3], [5, 5, 3], [7, 7, 3], [9, 7, 3], [13, 7, 3]]
RUN_TIMEOUT_S = 240


# ------------------------------------------------------------------------------------------ the scenario
def study_file(folder: str, name: str = "faults", replicates: int = 2, kernels: list | None = None) -> str:
    import yaml

    raw = {"name": name,
           "space": {"stem_stride": 2, "block": "replk", "kernels": kernels or KERNELS, "reparam": [[], [3]],
                     "stages": [{"depth": 1, "width": 16}, {"depth": 1, "width": 32}, {"depth": 1, "width": 32}]},
           "data": {"dataset": "synthetic", "train_per_class": 4, "val_per_class": 2},
           "proxy": {"epochs": 2},
           "budgets": {"latency": {"runtime": "torch", "rounds": 2, "repeats": 2}},
           "search": {"sampler": "grid", "trials": 2 * len(kernels or KERNELS), "concurrency": 2, "seed": 0, "replicates": replicates,
                      "pruning": {"scheduler": "none"}}}
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def expected(study: str) -> set[tuple[str, int]]:
    """(network, replicate) of an uninterrupted run: every distinct grid network, every replicate."""
    from lkscale.search.checks import space_specs
    from lkscale.study import load_study

    s = load_study(study)
    return {(n, r) for n in space_specs(s) for r in range(s.search.replicates)}


def _start(study: str, out: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    e = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, __file__, "search", study, "--output", out, "--no-report", *extra],
                            cwd=REPO, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        _, err = proc.communicate()
        return -1, err
    return proc.returncode, err


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def session_pids(sid: int) -> list[int]:
    """Processes of a session (the driver and the local Ray it started), from /proc."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.getsid(int(p)) == sid:
                    out.append(int(p))
            except OSError:
                pass
    return out


def reap(proc: subprocess.Popen, wait_s: float = 10.0) -> None:
    """After the driver died: let its Ray notice (as a crash would leave it), then clear what is left."""
    deadline = time.time() + wait_s
    while time.time() < deadline and len(session_pids(proc.pid)) > 0:
        time.sleep(0.5)
    kill_group(proc)
    proc.wait()
    for pid in session_pids(proc.pid):  # Ray's agents start their own process groups in the driver's session
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.time() + 15
    while time.time() < deadline and session_pids(proc.pid):
        time.sleep(0.2)


def rows(out: str) -> list:
    from lkscale.rundir import read_trials

    try:
        return read_trials(out, strict=True)
    except FileNotFoundError:
        return []


def done(out: str) -> set[tuple[str, int]]:
    from lkscale.rundir import read_trials

    rs = read_trials(out, []) if os.path.isfile(os.path.join(out, "trials.csv")) else []  # damaged rows: not done
    return {(t.name, int(t.get("replicate") or 0)) for t in rs if t.state == "complete"}


def wait_for(cond, timeout: float = 120.0, step: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return True
        except Exception:  # noqa: BLE001 - a file being replaced: try again
            pass
        time.sleep(step)
    return False


def trained(log: str) -> list[tuple[str, int]]:
    if not os.path.isfile(log):
        return []
    with open(log) as f:
        return [(a, int(b)) for a, b in (line.split() for line in f if line.strip())]


def trial_workers(sid: int) -> list[int]:
    """Ray worker processes of the session that run a trial (their title names the trainable)."""
    out = []
    for pid in session_pids(sid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::ImplicitFunc") or "curve_trainable" in cmd.split("\0")[0]:
            out.append(pid)
    return out


def check_record(out: str, study: str, log: str, marks: list) -> dict:
    """The final record against an uninterrupted run's: the same (network, replicate) set, each once;
    nothing finished before a fault trained again (``marks``: (trainings logged, finished set) at each
    fault: no training of a finished one starts after its mark); Optuna agrees with trials.csv."""
    import optuna

    from lkscale.search import optuna_storage

    want = expected(study)
    rs = rows(out)
    got = [(t.name, int(t.get("replicate") or 0)) for t in rs if t.state == "complete"]
    assert set(got) == want, (sorted(want - set(got)), sorted(set(got) - want))
    assert len(got) == len(set(got)), "a (network, replicate) recorded twice"
    assert not [t for t in rs if t.state in ("running", "failed")], [(t.name, t.state) for t in rs]
    log_lines = trained(log)
    for n, finished in marks:
        again = sorted(set(log_lines[n:]) & finished)
        assert not again, f"finished before a fault, trained again after it: {again}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ot = optuna.load_study(study_name="faults", storage=optuna_storage(out)).trials
    assert not [t.number for t in ot if t.state.name in ("RUNNING", "WAITING")]
    complete = {}
    for t in ot:
        if t.state.name == "COMPLETE" and t.user_attrs.get("name"):
            complete.setdefault(t.user_attrs["name"], []).append(t)
    names = {n for n, _ in want}
    assert set(complete) == names, (sorted(names - set(complete)), sorted(set(complete) - names))
    for n, ts in complete.items():
        assert len(ts) == 1, f"{n}: {len(ts)} COMPLETE Optuna trials"
        accs = [float(t.val_acc) for t in rs if t.name == n and t.state == "complete"]
        assert abs(ts[0].values[0] - sum(accs) / len(accs)) < 1e-9, (n, ts[0].values, accs)
    return {"networks": len(names), "replicates": len(got), "optuna_trials": len(ot)}


FAULT_NAMES = {"enospc": "full disk while writing the record", "sigkill": "driver SIGKILL",
               "sigkill-group": "driver + its Ray SIGKILL (node lost)", "sigint": "SIGINT (Ctrl-C)",
               "worker": "trial worker SIGKILL", "second": "second driver on the folder",
               "damage": "trials.csv cut inside its last row, summary.json cut (damaged outside lkscale)"}


def damage(out: str, rng: random.Random) -> str:
    """Cut trials.csv inside its last row and summary.json in half, as a copy damaged outside lkscale would;
    returns the trial_id of the cut row. The damage is named (report) before the resume rebuilds it."""
    from lkscale.rundir import record_damage

    path = os.path.join(out, "trials.csv")
    text = open(path).read()
    last = text.rstrip("\n").rfind("\n") + 1
    cut = last + rng.randint(12, len(text) - last - 2)
    with open(path, "w") as f:
        f.write(text[:cut])
    summary = os.path.join(out, "summary.json")
    if os.path.isfile(summary):
        body = open(summary).read()
        with open(summary, "w") as f:
            f.write(body[: len(body) // 2])
    named = record_damage(out)
    assert any(d.file == path and d.where.startswith("row ") for d in named), [str(d) for d in named]
    return text[last:].split(",", 1)[0]


def chain(tmp: str, faults: list[str], seed: int = 0, say=lambda m: None, kernels: list | None = None,
          injected: list | None = None) -> dict:
    """``injected``: a list the faults are added to as they strike (read it when the chain raises)."""
    started: list[subprocess.Popen] = []
    try:
        return _chain(tmp, faults, seed, say, started, kernels, [] if injected is None else injected)
    finally:  # whatever happened, no driver or Ray process of ours outlives the scenario
        for p in started:
            if p.poll() is None or session_pids(p.pid):
                reap(p, 0)


def _chain(tmp: str, faults: list[str], seed: int, say, started: list, kernels: list | None, injected: list) -> dict:
    """One search hit by ``faults`` in turn (each but ``worker`` ends a run; the next run is --resume), then
    resumed to the end; a second driver is started while the first run holds the folder. Every fault is
    checked where it strikes (exit codes, messages, the record still whole) and the final record against an
    uninterrupted run's (``check_record``). Returns the faults injected, in order, and the record's counts."""
    rng = random.Random(seed)
    start = lambda *a, **k: started.append(_start(*a, **k)) or started[-1]  # noqa: E731
    study = study_file(tmp, kernels=kernels)
    out = os.path.join(tmp, "run")
    log = os.path.join(tmp, "trained.log")
    env = {"CURVES_LOG": log, "CURVES_SLEEP": "0.15", "LKSCALE_CACHE": os.path.join(tmp, "cache")}
    total = len(expected(study))
    marks: list = []  # (trainings logged, finished (network, replicate)) at each fault
    damaged = None
    for i, fault in enumerate(faults + [None]):
        if fault is None and not damaged and i and done(out) == expected(study):
            break  # the last fault's run ended the search (a worker killed and retried): nothing left to resume
        before = done(out) if os.path.isdir(out) else set()
        k = rng.randint(0, max(1, (total - len(before)) // 3))  # strikes after k more finished trials (and a moment)
        fenv = dict(env, LKSCALE_FAULT=f"enospc-after:{rng.randint(2, 12)}") if fault == "enospc" else env
        proc = start(study, out, *(("--resume",) if i else ()), env=fenv)
        if damaged:  # the resume says what it rebuilt from the Tune folders
            rc, err = finish(proc)
            assert rc == 0 and "rebuilt from the Tune folders" in err and "summary.json" in err, err[-3000:]
            damaged = None
            if fault is None:
                break
            proc = start(study, out, "--resume", env=fenv)
        if "second" not in injected and fault in ("sigkill", "sigkill-group", "sigint", "worker"):
            # a second driver while this one holds the folder: refused at once, exit 2, one line
            assert wait_for(lambda: os.path.exists(os.path.join(out, ".lkscale.owner.json")), 120)
            rc2, err2 = finish(start(study, out, "--resume", env=env), 120)
            if proc.poll() is None:  # the first still runs: the check was fair
                assert rc2 == 2 and "is in use by lkscale search" in err2 and len(err2.strip().splitlines()) == 1, \
                    (rc2, err2[-2000:])
                injected.append("second")
        if fault in ("sigkill", "sigkill-group", "sigint", "worker"):
            wait_for(lambda: len(done(out) - before) >= k or proc.poll() is not None, 120)
            time.sleep(rng.uniform(0, 0.6))
            if proc.poll() is not None:  # the run ended before the fault could strike: nothing injected
                rc, err = finish(proc)
                assert rc == 0, err[-3000:]
                continue
        if fault == "worker":  # Ray retries the trial; the search goes on in the same run
            pids: list[int] = []
            deadline = time.time() + 60
            while not pids and proc.poll() is None and time.time() < deadline:
                pids = trial_workers(proc.pid)
                time.sleep(0.05)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                injected.append(fault)
            rc, err = finish(proc)
            assert rc == 0, err[-3000:]
            continue
        if fault == "sigkill":  # the driver alone (its local Ray is left to notice, as after a crash)
            os.kill(proc.pid, signal.SIGKILL)
            reap(proc)
        elif fault == "sigkill-group":  # the driver with its whole process group (a node lost)
            kill_group(proc)
            reap(proc, 0)
        elif fault == "sigint":  # Ctrl-C in a terminal: the whole foreground group
            kill_group(proc, signal.SIGINT)
            rc, err = finish(proc, 90)
            reap(proc, 0)
            assert rc == 1 and "interrupted" in err.strip().splitlines()[-1], (rc, err[-3000:])  # said, not "done"
        elif fault == "damage":  # after a clean end: the record damaged outside lkscale
            rc, err = finish(proc)
            assert rc == 0, err[-3000:]
            marks.append((len(trained(log)), done(out)))
            damaged = damage(out, rng)
        else:
            rc, err = finish(proc)
            if fault == "enospc" and rc != 0:
                last = err.strip().splitlines()[-1]  # one line: which file, and that its previous version is intact
                assert rc == 1 and "No space left on device" in last and ("is intact" in last or
                                                                          "nothing was written" in last), err[-3000:]
                rows(out)  # the record on disk still reads, every row whole (strict)
            else:
                assert rc == 0, err[-3000:]
                if fault:  # the run wrote less than the fault waited for: nothing was injected
                    continue
        if fault:
            injected.append(fault)
            marks.append((len(trained(log)), done(out)))
            say(f"fault {len(injected)}: {FAULT_NAMES[fault]} with {len(done(out))}/{total} trials finished")
    return {"injected": injected, "record": check_record(out, study, log, marks)}


# ------------------------------------------------------------------------------------------ pytest
if __name__ != "__main__":
    import pytest

    @pytest.mark.slow
    def test_faults_chain_resumes_to_the_uninterrupted_record(tmp_path):
        """A full disk, a second driver, SIGKILL of the driver, SIGKILL of a trial worker and Ctrl-C, each
        followed by --resume: the record ends as an uninterrupted run's."""
        res = chain(str(tmp_path), ["enospc", "sigkill", "sigint", "worker"], seed=int(os.environ.get("FAULT_SEED", 1)),
                    say=print, kernels=KERNELS[:3])
        n = len(res["injected"])
        assert n >= 4, res  # the second driver, the driver SIGKILL, Ctrl-C, and mostly the full disk and the worker
        print(f"faults injected {n}, survived {n}, records compared 1: {json.dumps(res)}")

    def test_full_disk_leaves_the_previous_record_and_says_so(tmp_path, monkeypatch):
        from lkscale.rundir import read_trials, update_summary, write_costs, write_trials

        run = str(tmp_path)
        write_trials(run, [{"trial_id": "a", "number": 0, "name": "n0", "state": "complete", "val_acc": 0.5}])
        update_summary(run, {"trials": 1})
        write_costs(run, {"n0": {"params": 1}})
        before = {f: open(os.path.join(run, f)).read() for f in ("trials.csv", "summary.json", "costs.json")}
        monkeypatch.setenv("LKSCALE_FAULT", "enospc-after:0")
        for write in (lambda: write_trials(run, [{"trial_id": "b", "number": 1, "name": "n1", "state": "complete"}]),
                      lambda: update_summary(run, {"trials": 2}), lambda: write_costs(run, {})):
            with pytest.raises(OSError) as e:
                write()
            assert e.value.errno == 28 and "No space left on device" in str(e.value) and "is intact" in str(e.value)
        assert {f: open(os.path.join(run, f)).read() for f in before} == before
        assert sorted(os.listdir(run)) == sorted(before)  # no temporary file left behind
        assert [t.name for t in read_trials(run, strict=True)] == ["n0"]

    def test_corrupted_dataset_cache_is_detected_and_rebuilt(tmp_path, caplog):
        import numpy as np

        from lkscale.data.cache import cached_arrays

        src = tmp_path / "src"
        src.mkdir()
        (src / "data.bin").write_bytes(b"x" * 10)
        calls = []

        def decode():
            calls.append(1)
            return {"train_x": np.arange(4000, dtype=np.uint8).reshape(40, 100), "train_y": np.arange(40),
                    "classes": ["a", "b"]}

        cache = tmp_path / "cache"
        first = cached_arrays("t", src, decode, [src], cache)
        folder = next(p for p in cache.iterdir() if p.is_dir())
        for corrupt in (lambda: (folder / "train_x.npy").write_bytes((folder / "train_x.npy").read_bytes()[:300]),
                        lambda: (folder / "meta.json").write_text("{not json"),
                        lambda: (folder / "train_x.npy").write_bytes(b"garbage")):
            corrupt()
            again = cached_arrays("t", src, decode, [src], cache)
            assert np.array_equal(again["train_x"], first["train_x"]) and again["classes"] == ["a", "b"]
        assert len(calls) == 4  # decoded once, then once after each corruption: detected, rebuilt
        assert "unreadable cache" in caplog.text or len(calls) == 4

    def test_trial_over_its_memory_limit_fails_alone_with_the_reason(tmp_path, monkeypatch):
        """resources.memory_per_trial_mb: the real trainable, given a tiny limit, reports a failed trial that
        says it ran out of memory (Tune records it, the search goes on); without the limit it trains. The
        limited runs are in a forked child: a trial's process ends with its trial, as a Ray actor's does."""
        import numpy as np
        import ray.tune

        import lkscale.search.trainable as trainable
        from lkscale.config import DataConfig, TrainConfig, to_dict
        from lkscale.search.memory import trial_memory_limit
        from lkscale.spec import ArchSpec

        spec = ArchSpec.from_json(json.dumps({
            "stem": {"family": "replk", "stride": 2}, "downsample": "replk", "head": "replk",
            "stages": [{"block": "replk", "depth": 1, "width": 16, "kernel": 3},
                       {"block": "replk", "depth": 1, "width": 32, "kernel": 3},
                       {"block": "replk", "depth": 1, "width": 32, "kernel": 3}]}))
        reports = []
        monkeypatch.setattr(ray.tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
        monkeypatch.setattr(trainable, "node_id", lambda: "test")  # no Ray runtime needed
        data = DataConfig(dataset="synthetic", train_per_class=8, val_per_class=4, input_size=32)
        cfg = {"spec": spec.to_json(), "name": spec.name, "data": to_dict(data),
               "proxy": to_dict(TrainConfig(epochs=1, batch_size=64, device="cpu")), "cpus_per_trial": 1,
               "run_dir": str(tmp_path), "replicate": 1}  # replicate 1: no weights written
        trainable.train_candidate(cfg)
        assert not reports[-1]["failed"] and reports[-1]["epoch"] == 1, reports[-1]
        result = tmp_path / "child.json"
        pid = os.fork()
        if pid == 0:  # the child: the limit, then the trial with its limit
            out = {}
            try:
                with trial_memory_limit(32):
                    try:  # a fresh mapping: malloc could serve np.ones from free heap the suite left behind
                        mmap.mmap(-1, 256 * 2 ** 20)  # 256 MiB past a 32 MiB limit
                    except OSError as e:
                        out["refused"] = e.errno == errno.ENOMEM
                out["lifted"] = int(np.ones(256 * 2 ** 20, dtype=np.uint8).sum()) == 256 * 2 ** 20
                reports.clear()
                wide = json.loads(cfg["spec"])
                for st, w in zip(wide["stages"], (64, 128, 256)):  # 4-8x the activations just trained: new memory
                    st["width"] = w
                trainable.train_candidate({**cfg, "spec": json.dumps(wide), "memory_mb": 0.5})
                out["report"] = {k: reports[-1][k] for k in ("failed", "error")}
            except BaseException as e:  # noqa: BLE001 - said in the parent's assertion
                out["raised"] = repr(e)
            finally:
                try:
                    result.write_text(json.dumps(out))
                finally:
                    os._exit(0)
        os.waitpid(pid, 0)
        out = json.loads(result.read_text())
        assert out.get("refused") and out.get("lifted"), out
        assert out["report"]["failed"] and out["report"]["error"].startswith(
            "out of memory: training this candidate needed more than its limit of 0.5 MiB"), out

    def test_plan_says_the_peak_memory_per_trial_it_expects(tmp_path):
        """lkscale plan: the probe's measured peak (getrusage) plus the trial's images, and the limit if any."""
        import yaml

        from lkscale.search.planning import make_plan
        from lkscale.study import load_study

        raw = yaml.safe_load(open(study_file(str(tmp_path))))
        raw["resources"] = {"memory_per_trial_mb": 900}
        path = tmp_path / "mem.yaml"
        path.write_text(yaml.safe_dump(raw))
        with open("/proc/self/status") as f:  # this process runs the probe: its peak is at least its size before
            rss_mb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
        mem = make_plan(load_study(str(path)), latency=False)["estimate"]["memory"]
        peak_after_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # and no more than its peak since
        assert rss_mb - 0.05 <= mem["probe_peak_mb"] <= peak_after_mb + 0.05 and mem["probe_peak_mb"] < 16 * 1024
        assert mem["images_mb"] == round((4 + 2) * 10 * 3 * 32 * 32 / 2 ** 20, 1)  # train + val images, uint8
        assert abs(mem["per_trial_mb"] - (mem["probe_peak_mb"] + mem["images_mb"])) <= 0.15  # each rounded to 0.1 (two roundings: up to 0.1 apart, plus float error)
        assert "MiB per trial at peak" in mem["text"] and "per-trial limit 900 MiB" in mem["text"]

    def _record(run):
        from lkscale.rundir import update_summary, write_costs, write_fidelity, write_trials

        rows = [{"trial_id": f"t{i}", "number": i, "name": f"n{i}", "state": "complete", "val_acc": round(0.4 + i / 100, 2),
                 "val_acc_epochs": [0.3, round(0.4 + i / 100, 2)], "replicate": 0, "latency_ms": 1.0 + i} for i in range(4)]
        write_trials(run, rows)
        write_costs(run, {"n0": {"params": 1}})
        update_summary(run, {"trials": 4})
        write_fidelity(run, [{"name": "n0", "state": "complete", "proxy_acc": 0.4, "high_acc": 0.5, "epochs": 3}])
        return rows

    def test_damaged_records_are_named_never_silently_dropped(tmp_path):
        """The issue's case: trials.csv cut mid-row reported 3 of 4 trials without a word. Now every damaged
        row or file is named (file, row, line, why): report warns and leaves it out; strict reading (resume)
        stops with one line."""
        from lkscale.cli.report import warnings
        from lkscale.rundir import RunDirError, load_run, read_costs, read_fidelity, read_trials

        run = str(tmp_path)
        _record(run)
        path = os.path.join(run, "trials.csv")
        text = open(path).read()
        open(path, "w").write(text[: len(text) - 40])  # cut inside the last row
        run_ = load_run(run)
        assert len(run_.trials) == 3 and [d.where for d in run_.damaged] == ["row 4 (line 5)"]
        assert [w for w in warnings(run) if "trials.csv: row 4 (line 5) is damaged (" in w and "left out" in w]
        with pytest.raises(RunDirError, match=r"trials.csv: row 4 \(line 5\) is damaged"):
            read_trials(run, strict=True)
        lines = text.splitlines(keepends=True)
        open(path, "w").write("".join(lines[:2] + [lines[2][:25] + "\n"] + lines[3:]))  # a middle row cut short
        damaged = []
        assert len(read_trials(run, damaged)) == 3 and "row 2 (line 3) is damaged (cut short: " in str(damaged[0])
        # a whole row whose cells are not what their columns hold
        for bad, why in (("complete", "state 'compleet'"), ("0.42", "val_acc 'x0.42' is not a number"),
                         ('"[0.3, 0.42]"', "val_acc_epochs '[0.3, 0.4' is not a JSON list")):
            row = lines[3].replace(bad, {"complete": "compleet", "0.42": "x0.42"}.get(bad, '"[0.3, 0.4"'), 1)
            open(path, "w").write("".join(lines[:3] + [row] + lines[4:]))
            damaged = []
            assert len(read_trials(run, damaged)) == 3 and why in str(damaged[0]) and "row 3 (line 4)" in str(damaged[0])
        for name, cut in (("costs.json", 5), ("summary.json", 9)):
            p = os.path.join(run, name)
            body = open(p).read()
            open(p, "w").write(body[:cut])
        with pytest.raises(RunDirError, match=r"costs.json: line 2 column 2 is damaged \(not valid JSON"):
            read_costs(run)
        f = os.path.join(run, "fidelity.csv")
        body = open(f).read()
        open(f, "w").write(body[:-8])
        damaged = []
        assert read_fidelity(run, damaged) == [] and "fidelity.csv: row 1 (line 2)" in str(damaged[0])
        said = warnings(run)
        assert {w.split(": ")[0].rsplit("/", 1)[-1] for w in said} == {"trials.csv", "costs.json", "summary.json",
                                                                       "fidelity.csv"}, said

    def test_resume_rebuilds_a_damaged_row_from_tune_or_stops_naming_it(tmp_path):
        from lkscale.rundir import RunDirError, read_trials
        from lkscale.search.resume import repair_record

        run = str(tmp_path)
        rows = _record(run)
        (tmp_path / "study.yaml").write_text("name: x\nproxy: {epochs: 2, seed: 0}\n")
        path = os.path.join(run, "trials.csv")
        intact = open(path).read()
        open(path, "w").write(intact[:-30])
        with pytest.raises(RunDirError, match=r"trials.csv: row 4 \(line 5\) is damaged .*do not hold"):
            repair_record(run, print)
        spec = json.dumps({"stem": {"family": "replk", "stride": 2},
                           "stages": [{"block": "replk", "depth": 1, "width": 16, "kernel": 3}]})
        cfg = {"name": "n3", "number": 3, "replicate": 0, "spec": spec, "latency_ms": 4.0}
        last = {"epoch": 2, "val_acc": 0.43, "val_acc_epochs": "[0.3, 0.43]", "done": True, "val_n": 20}
        (tmp_path / "tune").mkdir()
        (tmp_path / "tune" / "experiment_state-x.json").write_text(json.dumps({"trial_data": [[
            json.dumps({"trial_id": "t3", "config": cfg, "status": "TERMINATED"}), json.dumps({"last_result": last})]]}))
        said = []
        repair_record(run, said.append)
        assert any("row 4 (line 5)" in m and "rebuilt from the Tune folders: trial 3 replicate 0 complete" in m
                   for m in said), said
        got = {t.trial_id: t for t in read_trials(run, strict=True)}
        assert sorted(got) == ["t0", "t1", "t2", "t3"] and got["t3"].val_acc == 0.43 and got["t3"].state == "complete"
        assert got["t3"].val_acc_epochs == [0.3, 0.43] and got["t0"].val_acc == rows[0]["val_acc"]
        assert [f for f in os.listdir(run) if f.startswith("trials.csv.damaged-")]  # the damaged copy is kept


# ------------------------------------------------------------------------------------------ the driver
def main(argv: list[str]) -> int:
    """``lkscale <argv>`` with the fixed-curve trainable in place of proxy training."""
    sys.path.insert(0, HERE)
    import ray.cloudpickle

    import curves
    import lkscale.search
    import lkscale.search.objective
    from lkscale.cli import main as cli_main

    ray.cloudpickle.register_pickle_by_value(curves)
    lkscale.search.objective.QUIET_WAIT_S = 0.0  # no waiting for a quiet machine to time latencies: not tested here
    lkscale.search.run_study = functools.partial(lkscale.search.run_study, trainable=curves.curve_trainable)
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
