"""A real multi-node Ray cluster on this machine: `lkscale search --address` across nodes, a node lost
mid-sweep, the driver killed mid-sweep and resumed, and the dataset staged through the object store.

The cluster: a head node (1 CPU, resource ``nodeA``) and worker nodes (1 CPU each, ``nodeB``...), each a
``ray start --block`` process in its own session (so one node can be killed as a whole), all with their
own ``--temp-dir`` and ports (other Ray instances on the machine are never touched: no ``ray stop``),
token authentication with a token of our own (``RAY_AUTH_TOKEN``), and a node-local ``LKSCALE_CACHE``
each. Worker nodes run with ``LKSCALE_STAGE_DATA=always``: they take the dataset from the object store
as if they could not read the data root. All addresses are this machine's own.
"""
from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
SMOKE = os.path.join(REPO, "studies", "smoke.yaml")
FINISHED = ("complete", "pruned", "infeasible")

needs_cluster = [pytest.mark.slow,
                 pytest.mark.skipif(not os.path.isfile(RAY), reason=f"no ray CLI next to {sys.executable}")]


def cluster_test(fn):
    for mark in needs_cluster:
        fn = mark(fn)
    return fn


# ----------------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_archive(path: str, classes: int = 10, train: int = 60, test: int = 5, size: int = 32) -> str:
    """A small image-folder .tar.gz (JPEG) whose classes differ in colour and stripe direction."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tf:
        for split, n in (("train", train), ("test", test)):
            for c in range(classes):
                base = np.array([(c * 37) % 256, (c * 91) % 256, (c * 151) % 256], np.float32)
                for i in range(n):
                    img = base + rng.normal(0, 40, (size, size, 3))
                    if c % 2:
                        img[::4] = 255 - img[::4]
                    else:
                        img[:, ::4] = 255 - img[:, ::4]
                    buf = io.BytesIO()
                    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
                    info = tarfile.TarInfo(f"{split}/class{c}/{i}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tf.addfile(info, buf)
    return path


def read_rows(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "trials.csv")
    if not os.path.isfile(path):
        return []
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


class Cluster:
    """Ray nodes on this machine, each a `ray start --block` process group we can kill alone."""

    def __init__(self, root: str):
        self.root = root
        self.temp = os.path.join(root, "ray")
        self.port = _free_port()
        self.address: str | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, str] = {}
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
                        RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
        self.env.pop("RAY_ADDRESS", None)

    def _start(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        log = os.path.join(self.root, f"{name}.log")
        self.logs[name] = log
        with open(log, "ab") as out:
            p = subprocess.Popen([RAY, "start", *args, "--block", "--disable-usage-stats"], env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root)
        self.procs[name] = p
        return p

    def node_env(self, name: str, **extra: str) -> dict:
        return dict(self.env, LKSCALE_CACHE=os.path.join(self.root, f"cache-{name}"), **extra)

    def start_head(self, timeout: float = 120) -> str:
        self._start("nodeA", ["--head", f"--port={self.port}", "--num-cpus=1", '--resources={"nodeA": 1}',
                              f"--temp-dir={self.temp}", "--include-dashboard=false"], self.node_env("nodeA"))
        addr_file = os.path.join(self.temp, "ray_current_cluster")
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.procs["nodeA"].poll() is not None:
                raise RuntimeError(f"head node exited: {self.tail('nodeA')}")
            if os.path.isfile(addr_file) and open(addr_file).read().strip():
                self.address = open(addr_file).read().strip()
                return self.address
            time.sleep(0.5)
        raise RuntimeError(f"head node not up after {timeout}s: {self.tail('nodeA')}")

    def add_node(self, name: str, **extra_env: str) -> None:
        self._start(name, [f"--address={self.address}", "--num-cpus=1", f'--resources={{"{name}": 1}}',
                           f"--temp-dir={self.temp}"], self.node_env(name, **extra_env))

    def node_ids(self, want: list[str], timeout: float = 120) -> dict[str, str]:
        """{custom resource name: first 12 chars of its node id} once every node in ``want`` is alive."""
        code = (
            "import json, sys, time, ray\n"
            "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
            "want = set(sys.argv[3:]); t0 = time.time()\n"
            "while True:\n"
            "    ids = {r: n['NodeID'][:12] for n in ray.nodes() if n['Alive'] for r in n['Resources'] if r in want}\n"
            "    if set(ids) == want or time.time() - t0 > float(sys.argv[2]):\n"
            "        print(json.dumps(ids)); break\n"
            "    time.sleep(0.5)\n")
        out = subprocess.run([sys.executable, "-c", code, self.address, str(timeout), *want], env=self.env,
                             capture_output=True, text=True, timeout=timeout + 90, cwd=self.root)
        ids = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
        if set(ids) != set(want):
            raise RuntimeError(f"nodes {want} not all alive: {ids}; {out.stderr[-2000:]}")
        return ids

    def node_pids(self, name: str) -> list[int]:
        """Processes of one node found by their environment (raylet, workers: all inherit LKSCALE_CACHE)."""
        tag = f"LKSCALE_CACHE={self.node_env(name)['LKSCALE_CACHE']}".encode()
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        if tag in f.read().split(b"\0"):
                            out.append(int(pid))
                except OSError:
                    pass
        return out

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's process group and every process of that node, wherever its group."""
        p = self.procs.pop(name)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        survivors = self.node_pids(name)
        if survivors:
            print(f"{name}: {len(survivors)} process(es) outside its process group killed too")
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        p.wait(timeout=30)

    def tail(self, name: str, n: int = 3000) -> str:
        try:
            return open(self.logs[name], errors="replace").read()[-n:]
        except OSError:
            return ""

    def shutdown(self) -> None:
        """Every process this cluster started, by process group, then any straggler still naming our temp
        dir (by pid). Never `ray stop`: that would stop other Ray instances on the machine too."""
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        t0 = time.time()
        for p in self.procs.values():
            try:
                p.wait(timeout=max(1.0, 10 - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Ray workers run in sessions of their own: find them (and anything else of ours) by the
        # environment every node's processes inherit, or by our temp dir on their command line
        pids = {pid for name in self.logs for pid in self.node_pids(name)}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.temp.encode() in f.read():
                        pids.add(int(pid))
            except OSError:
                continue
        for pid in pids - {os.getpid()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs.clear()


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="lkc", dir="/tmp")  # short: Ray's socket paths live under it
    c = Cluster(root)
    try:
        c.start_head()
        c.add_node("nodeB", LKSCALE_STAGE_DATA="always")
        c.ids = c.node_ids(["nodeA", "nodeB"])
        c.archive = make_archive(os.path.join(root, "tiny-images.tar.gz"))
        yield c
    finally:
        c.shutdown()
        if not os.environ.get("LKSCALE_TEST_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


def write_study(c: Cluster, name: str, epochs: int = 2) -> str:
    with open(SMOKE) as f:
        study = yaml.safe_load(f)
    study["name"] = name
    study["proxy"]["epochs"] = epochs
    study["data"] = {"root": c.archive, "train_per_class": 40, "val_per_class": 10}
    study["search"]["pruning"] = {"scheduler": "none"}  # every feasible trial trains all its epochs
    path = os.path.join(c.root, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(study, f)
    return path


def search(c: Cluster, study: str, run_dir: str, *extra: str, log: str) -> subprocess.Popen:
    env = dict(c.env, RAY_ADDRESS=c.address, LKSCALE_CACHE=os.path.join(c.root, "cache-driver"))
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "lkscale", "search", study, "--address", "auto",
                                 "--output", run_dir, "--no-report", *extra], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def wait_rows(proc: subprocess.Popen, run_dir: str, until, timeout: float, log: str, poll: float = 0.3) -> list[dict]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        rows = read_rows(run_dir)
        if until(rows):
            return rows
        if proc.poll() is not None:
            pytest.fail(f"search exited ({proc.returncode}) before the expected state; rows: "
                        f"{[(r['number'], r['state'], r['node']) for r in rows]}\n{open(log).read()[-3000:]}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout}s; rows: {[(r['number'], r['state'], r['node']) for r in read_rows(run_dir)]}"
                f"\n{open(log).read()[-3000:]}")


def assert_weights(run_dir: str, rows: list[dict]) -> None:
    from safetensors import safe_open

    for r in rows:
        if r["state"] == "complete":
            path = os.path.join(run_dir, "weights", f"{r['name']}.safetensors")
            assert os.path.isfile(path), f"complete trial {r['number']} has no weights at {path}"
            with safe_open(path, framework="pt") as f:
                assert json.loads(f.metadata()["spec"])["stages"], path


# ----------------------------------------------------------------------------------------- tests
@cluster_test
def test_driver_killed_then_resumed_from_shared_storage(cluster):
    """SIGKILL the driver mid-sweep; `--resume` keeps every finished row and reaches the requested count
    (Tune storage given as a URI, Optuna in an RDB)."""
    c = cluster
    study = write_study(c, "cluster_resume")
    run_dir, storage = os.path.join(c.root, "run-resume"), os.path.join(c.root, "shared-storage")
    log = os.path.join(c.root, "driver-resume.log")
    n = 3
    t0 = time.time()
    optuna_url = f"sqlite:///{os.path.join(c.root, 'optuna.db')}"  # the RDB path (PostgreSQL on a real cluster)
    uri = f"file://{storage}"  # a URI, as s3://... would be: Tune writes through pyarrow, lkscale cannot list it
    proc = search(c, study, run_dir, "--trials", str(n), "--storage", uri, "--optuna-storage", optuna_url, log=log)
    try:
        wait_rows(proc, run_dir, lambda rows: any(r["state"] == "complete" for r in rows)
                  and any(r["state"] == "running" for r in rows), 200, log)
        _kill_group(proc)
    finally:
        _kill_group(proc)
    before = {r["trial_id"]: r for r in read_rows(run_dir) if r["state"] in FINISHED}
    assert before and len(before) < n
    assert os.path.isdir(os.path.join(storage, "tune"))  # Tune's experiment went to --storage
    out = subprocess.run([sys.executable, "-m", "lkscale", "search", study, "--address", "auto", "--output", run_dir,
                          "--no-report", "--trials", str(n), "--storage", uri, "--optuna-storage", optuna_url,
                          "--resume", "--json"],
                         env=dict(c.env, RAY_ADDRESS=c.address, LKSCALE_CACHE=os.path.join(c.root, "cache-driver")),
                         capture_output=True, text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming:" in out.stderr
    rows = read_rows(run_dir)
    after = {r["trial_id"]: r for r in rows}
    for tid, r in before.items():  # finished rows unchanged
        assert {k: after[tid][k] for k in ("name", "state", "val_acc", "node", "spec")} == \
               {k: r[k] for k in ("name", "state", "val_acc", "node", "spec")}
    assert [r["state"] for r in rows if r["state"] not in FINISHED] == []
    assert len(rows) == n
    assert [d for d in os.listdir(storage) if d.startswith("tune_resume-")]  # the resumed experiment, by time
    assert not os.path.isdir(os.path.join(run_dir, "tune"))  # all of Tune's output went to the storage
    assert_weights(run_dir, rows)
    # every trained trial's weights are also in its Tune checkpoint in --storage (how they reach the
    # driver when the run folder is not shared); reused results (same architecture) have none
    from safetensors import safe_open

    for r in rows:
        if r["state"] == "complete" and "result reused" not in r["notes"]:
            found = [os.path.join(dp, f) for exp in os.listdir(storage) if exp.startswith("tune")
                     for dp, _, fs in os.walk(os.path.join(storage, exp, f"trial_{r['trial_id']}"))
                     for f in fs if f == f"{r['name']}.safetensors" and "checkpoint_" in dp]
            assert found, f"no checkpoint with the weights of trial {r['number']} in {storage}"
            with safe_open(found[0], framework="pt") as a, \
                    safe_open(os.path.join(run_dir, "weights", f"{r['name']}.safetensors"), framework="pt") as b:
                assert set(a.keys()) == set(b.keys()) and a.metadata()["spec"] == b.metadata()["spec"]
    import optuna  # the Optuna record is the RDB: one COMPLETE trial per complete row, nothing left RUNNING

    st = optuna.load_study(study_name="cluster_resume", storage=optuna_url)
    states = [t.state.name for t in st.get_trials(deepcopy=False)]
    assert states.count("COMPLETE") == sum(r["state"] in ("complete", "infeasible") for r in rows)
    assert "RUNNING" not in states
    assert not os.path.exists(os.path.join(run_dir, "optuna.journal"))
    print(f"driver kill + resume: {len(before)} finished kept, {n - len(before)} run after resume, "
          f"{time.time() - t0:.0f}s")


@cluster_test
def test_pipeline_retrains_winners_as_tasks_on_both_nodes(cluster):
    """pipelines/search_retrain_export.py --address: the finished search is left as is, the top 2 are
    retrained (1 epoch) as Ray tasks, one per node, and exported back to the driver's folder."""
    c = cluster
    run_dir = os.path.join(c.root, "run-resume")
    if not os.path.isfile(os.path.join(run_dir, "trials.csv")):
        pytest.skip("needs the run of test_driver_killed_then_resumed_from_shared_storage")
    before = read_rows(run_dir)
    out = os.path.join(c.root, "exports")
    p = subprocess.run([sys.executable, os.path.join(REPO, "pipelines", "search_retrain_export.py"),
                        os.path.join(c.root, "cluster_resume.yaml"), "--address", "auto", "--output", run_dir,
                        "--storage", os.path.join(c.root, "shared-storage"), "--optuna-storage",
                        f"sqlite:///{os.path.join(c.root, 'optuna.db')}", "--trials", str(len(before)), "--out", out,
                        "--top", "2", "--retrain-epochs", "1", "--no-onnx", "--no-report"],
                       env=dict(c.env, RAY_ADDRESS=c.address, LKSCALE_CACHE=os.path.join(c.root, "cache-driver")),
                       capture_output=True, text=True, timeout=240, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads(p.stdout)
    assert read_rows(run_dir) == before  # nothing searched again
    assert len(rec["exports"]) == 2
    assert {e["node"] for e in rec["exports"]} == {c.ids["nodeA"], c.ids["nodeB"]}
    for e in rec["exports"]:
        meta = json.load(open(os.path.join(out, e["name"], "export.json")))
        assert meta["metrics"]["retrain_epochs"] == 1 and meta["metrics"]["test_images"] == 50
    print(f"pipeline retrain tasks on nodes {sorted(e['node'] for e in rec['exports'])}; "
          f"stages {rec['stages_seconds']}")


@cluster_test
def test_trials_span_nodes_and_survive_a_lost_node(cluster):
    """Trials land on both nodes; the worker node is killed mid-trial; its trial is retried on the head
    node, nothing finished is lost, the study completes; the worker node staged the data once."""
    c = cluster
    if "nodeB" not in c.procs:  # an earlier test may have left us with the head only
        c.add_node("nodeB", LKSCALE_STAGE_DATA="always")
        c.ids = c.node_ids(["nodeA", "nodeB"])
    id_a, id_b = c.ids["nodeA"], c.ids["nodeB"]
    study = write_study(c, "cluster_nodes", epochs=3)  # killed after epoch 1: two epochs (~4 s) still to go
    run_dir = os.path.join(c.root, "run-nodes")
    log = os.path.join(c.root, "driver-nodes.log")
    n = 5
    t0 = time.time()
    proc = search(c, study, run_dir, "--trials", str(n), log=log)
    seen_running: set[str] = set()

    def fresh_trial_on_b(rows: list[dict]) -> bool:
        # kill as soon as a trial on B has just reported its first epoch (a whole epoch still to go), once
        # B has finished a trial; a trial seen running before may be about to finish
        fresh = [r for r in rows if r["node"] == id_b and r["state"] == "running" and r["trial_id"] not in seen_running]
        seen_running.update(r["trial_id"] for r in rows if r["state"] == "running")
        return bool(fresh) and any(r["node"] == id_b and r["state"] == "complete" for r in rows)

    try:
        rows = wait_rows(proc, run_dir, fresh_trial_on_b, 240, log, poll=0.1)
        c.kill_node("nodeB")
        killed_at = time.time() - t0
        victims = {r["trial_id"] for r in rows if r["node"] == id_b and r["state"] == "running"}
        print(f"killed nodeB at {killed_at:.1f}s; running on it: "
              f"{[(r['trial_id'], r['epochs_done']) for r in rows if r['trial_id'] in victims]}")
        finished_before = {r["trial_id"]: r for r in rows if r["state"] in FINISHED}
        proc.wait(timeout=300)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, open(log).read()[-3000:]
    rows = read_rows(run_dir)
    by_id = {r["trial_id"]: r for r in rows}
    assert len(rows) == n and all(r["state"] in FINISHED for r in rows), [(r["number"], r["state"]) for r in rows]
    assert {r["node"] for r in rows} >= {id_a, id_b}
    for tid, r in finished_before.items():  # nothing finished is lost
        assert by_id[tid]["state"] == r["state"] and by_id[tid]["val_acc"] == r["val_acc"]
    assert victims, "no trial was running on the killed node"
    for tid in victims:  # retried elsewhere (FailureConfig), to the end
        assert by_id[tid]["state"] in ("complete", "pruned") and by_id[tid]["node"] == id_a, (by_id[tid], open(log).read()[-3000:])
        errors = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(run_dir, "tune", f"trial_{tid}"))
                  for f in fs if f.startswith("error")]
        print(f"trial {tid}: error files {errors}")
    assert_weights(run_dir, rows)
    # data staging: node B fetched the archive from the object store once and decoded it once
    cache_b = os.path.join(c.root, "cache-nodeB")
    staged = [d for d in os.listdir(os.path.join(cache_b, "staged")) if not d.endswith(".lock")]
    assert len(staged) == 1
    with open(os.path.join(cache_b, "staged", staged[0], "tiny-images.tar.gz"), "rb") as f, open(c.archive, "rb") as g:
        assert f.read() == g.read()
    decoded = [d for d in os.listdir(cache_b) if d.startswith("imagefolder-") and not d.endswith(".lock")]
    assert len(decoded) == 1
    assert not os.path.isdir(os.path.join(c.root, "cache-nodeA", "staged"))  # the head read the root itself
    print(f"nodes {id_a} (head) {id_b} (killed at {killed_at:.0f}s); victims {sorted(victims)} retried on "
          f"{id_a}; rows by node {dict((x, sum(r['node'] == x for r in rows)) for x in (id_a, id_b))}; "
          f"{time.time() - t0:.0f}s")


@cluster_test
def test_latency_measured_on_the_node_that_declares_the_resource(cluster):
    """budgets.latency.resources: {nodeB: 1}: every measurement (while sampling and the final one) runs on node B,
    which is reserved for it (trials train on A); trials.csv names the node. A resource no node declares: one
    clear error at the start."""
    c = cluster
    if "nodeB" not in c.procs:  # an earlier test may have killed it
        c.add_node("nodeB", LKSCALE_STAGE_DATA="always")
        c.ids = c.node_ids(["nodeA", "nodeB"])
    id_a, id_b = c.ids["nodeA"], c.ids["nodeB"]
    path = write_study(c, "cluster_latency", epochs=1)
    raw = yaml.safe_load(open(path))
    raw["budgets"] = {"max_params": 1000000,
                      "latency": {"runtime": "torch", "rounds": 2, "repeats": 2, "resources": {"nodeB": 1}}}
    raw["search"].update(trials=1, concurrency=1)  # measured when drawn, then again after training
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    run_dir = os.path.join(c.root, "run-latency")
    env = dict(c.env, RAY_ADDRESS=c.address, LKSCALE_CACHE=os.path.join(c.root, "cache-driver"))
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "lkscale", "search", path, "--address", "auto", "--output", run_dir,
                          "--no-report", "--json"], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    assert "all its 1 CPU(s) reserved for measuring" in out.stderr
    rows = read_rows(run_dir)
    measured = [r for r in rows if r["latency_ms"]]
    assert len(rows) == 1 and measured, [(r["state"], r["error"]) for r in rows]
    for r in measured:
        assert r["latency_node"].split()[:1] == [id_b], r["latency_node"]  # "<node id> <host name> <address>"
    assert all(r["node"] == id_a for r in rows if r["state"] in ("complete", "pruned"))  # B only measures
    assert any(r["latency_source"] == "measured-final" for r in rows)
    costs = json.load(open(os.path.join(run_dir, "costs.json")))
    assert costs["latency"] and {v["latency_node"].split()[0] for v in costs["latency"].values()} == {id_b}
    bad = dict(raw, name="cluster_latency_bad")
    bad["budgets"]["latency"]["resources"] = {"edge_cpu": 1}
    bad_path = os.path.join(c.root, "cluster_latency_bad.yaml")
    with open(bad_path, "w") as f:
        yaml.safe_dump(bad, f)
    err = subprocess.run([sys.executable, "-m", "lkscale", "search", bad_path, "--address", "auto", "--output",
                          os.path.join(c.root, "run-latency-bad"), "--no-report"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert err.returncode == 2, err.stderr[-2000:]
    assert 'budgets.latency.resources: {"edge_cpu": 1.0}: no node of the Ray cluster declares it' in err.stderr
    assert "nodeA" in err.stderr and "nodeB" in err.stderr  # what the nodes do declare
    assert not os.path.isfile(os.path.join(c.root, "run-latency-bad", "costs.json"))  # nothing costed
    print(f"latency on {id_b} (reserved), trials on {id_a}: {time.time() - t0:.0f}s; trials.csv: "
          f"{[(r['state'], r['node'], r['latency_ms'], r['latency_source'], r['latency_node']) for r in rows]}")


# ----------------------------------------------------------------------------------------- unit (no cluster)
@pytest.fixture
def fake_object_store(monkeypatch):
    """ray.put/ray.get replaced by a dict, counting fetches: the staging logic without a Ray instance."""
    import ray

    store, fetches = {}, []

    def put(obj):
        store[len(store)] = obj
        return len(store) - 1

    def get(ref):
        fetches.append(ref)
        return store[ref]

    monkeypatch.setattr(ray, "put", put)
    monkeypatch.setattr(ray, "get", get)
    return fetches


def test_data_staged_once_when_the_root_is_not_readable(tmp_path, monkeypatch, fake_object_store):
    from lkscale.search import data_stage_payload, node_data

    src = make_archive(str(tmp_path / "imgs.tar.gz"), classes=2, train=3, test=1)
    monkeypatch.delenv("LKSCALE_STAGE_DATA", raising=False)
    from lkscale.config import DataConfig

    stage = data_stage_payload(DataConfig(dataset="imagefolder", root=src))
    assert stage["kind"] == "file" and stage["size"] == os.path.getsize(src)
    d = DataConfig(dataset="imagefolder", root=src, train_per_class=1)
    assert node_data(d, stage).root == src and fake_object_store == []  # readable here: used directly
    assert node_data(d, None) is d
    monkeypatch.setenv("LKSCALE_CACHE", str(tmp_path / "node-cache"))
    os.rename(src, src + ".gone")  # this "node" cannot read the root any more
    first = node_data(d, stage).root
    again = node_data(d, stage).root
    assert first == again and len(fake_object_store) == 1  # fetched once per node
    assert first.startswith(str(tmp_path / "node-cache" / "staged")) and os.path.basename(first) == "imgs.tar.gz"
    with open(first, "rb") as f, open(src + ".gone", "rb") as g:
        assert f.read() == g.read()
    assert os.stat(first).st_mtime_ns == stage["mtime_ns"]
    from lkscale.data import DataConfig, load_splits  # and lkscale.data decodes the staged copy

    splits = load_splits(DataConfig(root=first, train_per_class=2, val_per_class=1, test_per_class=0))
    assert len(splits.train) == 4 and splits.num_classes == 2


def test_folder_source_staged_as_a_tar(tmp_path, monkeypatch, fake_object_store):
    from lkscale.search import data_stage_payload, node_data

    root = tmp_path / "folder"
    for rel, text in (("train/a/1.txt", "x"), ("train/b/2.txt", "yy"), ("test/a/3.txt", "zzz")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setenv("LKSCALE_STAGE_DATA", "always")  # staged even though readable
    monkeypatch.setenv("LKSCALE_CACHE", str(tmp_path / "cache"))
    from lkscale.config import DataConfig

    stage = data_stage_payload(DataConfig(dataset="imagefolder", root=str(root)))
    assert stage["kind"] == "dir" and stage["size"] == 6
    staged = node_data(DataConfig(root=str(root)), stage).root
    assert staged != str(root) and os.path.basename(staged) == "folder"
    got = sorted(os.path.relpath(os.path.join(dp, f), staged) for dp, _, fs in os.walk(staged) for f in fs)
    assert got == ["test/a/3.txt", "train/a/1.txt", "train/b/2.txt"]
    assert open(os.path.join(staged, "train/b/2.txt")).read() == "yy"
    monkeypatch.setenv("LKSCALE_STAGE_DATA", "never")
    assert data_stage_payload(DataConfig(dataset="imagefolder", root=str(root))) is None
    assert data_stage_payload(DataConfig(dataset="synthetic")) is None


def test_recorder_takes_weights_from_the_checkpoint(tmp_path):
    """A trial on a node without the run folder: its weights reach RUN_DIR/weights via its Tune checkpoint."""
    from ray.tune import Checkpoint

    from lkscale.search.recorder import Recorder

    ckpt = tmp_path / "ckpt"
    (ckpt / "weights").mkdir(parents=True)
    payload = os.urandom(256)
    (ckpt / "weights" / "net-a.safetensors").write_bytes(payload)
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    class FakeTrial:
        config = {"name": "net-a"}

    rec = Recorder(str(run_dir), 2, 0)
    rec.on_checkpoint(0, [], FakeTrial(), Checkpoint.from_directory(str(ckpt)))
    dest = run_dir / "weights" / "net-a.safetensors"
    assert dest.read_bytes() == payload
    dest.write_bytes(b"direct")  # written by the trial itself (shared filesystem): left alone
    rec.on_checkpoint(0, [], FakeTrial(), Checkpoint.from_directory(str(ckpt)))
    assert dest.read_bytes() == b"direct"
