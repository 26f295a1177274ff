"""Benchmarks: our scripts and Stable-Baselines3 on the same machine, in the same run, side by side.

    pip install -r requirements.txt -r benchmarks/requirements.txt
    python benchmarks/run.py --suite             # the README's results: 7 envs, whole budgets (~8 h on 2 cores)
    python benchmarks/run.py --suite --quick     # the same pipeline, small budgets, 1 seed: a few minutes
    python benchmarks/run.py                     # time to solve CartPole-v1 and Pendulum-v1, runs stop when solved
    python benchmarks/run.py --suite --envs Acrobot-v1 --algos actor_critic,a2c_sb3 --seeds 3
    python benchmarks/run.py --baseline /tmp/old  # also run the scripts of another checkout, labelled [baseline]
    python benchmarks/run.py --from-json benchmarks/results/speed/runs.json    # redo a table and plot only
    python benchmarks/run.py --suite --resume    # go on where it stopped: keep every fresh record, run the rest
    python benchmarks/run.py --suite --report    # no training: the table and plot from the records alone

Each run is a user's command line with default hyperparameters (a3c.py with --num-workers 2); the SB3 runs
use the rl-zoo hyperparameters of their env (benchmarks/sb3_anchor.py). With --suite every run trains its
whole budget (--keep-training) and its final model is then evaluated deterministically for 20 episodes.
All on the CPU with one torch thread per process, at most --jobs processes at a time (a3c counts 2), started
seed by seed with ours and SB3's interleaved so that machine noise hits both alike. Writes to --out
(default benchmarks/results/): results.md (table), learning_curves.png and runs.json (every episode of
every run; not with --report, whose data are the records); raw logs go to --workdir.

Records: every run that finishes leaves one small JSON in --records (default <out>/runs/ENV/ALGO/seedN.json,
committed to the repository): the command, the machine, the versions, the per-episode (step, seconds, return)
curve and the summary. A record knows what it measured: ours carry a hash of the script and common.py, SB3's
the SB3 version and the zoo settings. --resume and --report use only the records that still match the code
(a changed script makes its records stale: rerun, never mixed into a table), so a suite goes on where it
stopped, on any machine, in any later session; SB3's expensive runs are made once and kept.
"""
import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench_analysis as ba  # noqa: E402

# (algorithm, env, env-step budget, seeds). SB3 is slow here (SAC: 40-90 updates/s), so its largest entries get
# fewer seeds: one LunarLander A2C run takes ~30 min, one LunarLanderContinuous SAC run ~100 min.
SUITE = [
    ("actor_critic", "CartPole-v1", 500_000, 10), ("a3c", "CartPole-v1", 500_000, 10),
    ("a2c_sb3", "CartPole-v1", 500_000, 10),
    ("actor_critic", "Acrobot-v1", 300_000, 5), ("a3c", "Acrobot-v1", 300_000, 5), ("a2c_sb3", "Acrobot-v1", 300_000, 5),
    ("actor_critic", "LunarLander-v3", 1_000_000, 5), ("a3c", "LunarLander-v3", 1_000_000, 5),
    ("a2c_sb3", "LunarLander-v3", 1_000_000, 3),
    ("sac", "Pendulum-v1", 20_000, 10), ("sac_sb3", "Pendulum-v1", 20_000, 5),
    ("sac", "InvertedPendulum-v5", 50_000, 5), ("sac_sb3", "InvertedPendulum-v5", 50_000, 2),
    ("sac", "LunarLanderContinuous-v3", 200_000, 3), ("sac_sb3", "LunarLanderContinuous-v3", 200_000, 1),
    ("sac", "HalfCheetah-v5", 100_000, 3), ("sac_sb3", "HalfCheetah-v5", 100_000, 1),
]
SPEED = [   # time to solve: every run stops once solved
    ("actor_critic", "CartPole-v1", 500_000, 10), ("a3c", "CartPole-v1", 500_000, 10),
    ("a2c_sb3", "CartPole-v1", 500_000, 10), ("sac", "Pendulum-v1", 30_000, 10), ("sac_sb3", "Pendulum-v1", 30_000, 10),
]
QUICK_FRACTION = {"suite": 0.05, "speed": 0.3}   # --quick: budgets scaled by this, 1 seed (2 for speed)
A3C_WORKERS = 2
EVAL_EPISODES = 20


def default_jobs():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", action="store_true", help="the whole-budget suite of 7 envs (default: time to solve)")
    p.add_argument("--quick", action="store_true", help="small budgets and 1-2 seeds: checks the pipeline")
    p.add_argument("--algos", default=None, help="comma-separated subset of " + ",".join(ba.ALGO_ORDER))
    p.add_argument("--envs", default=None, help="comma-separated subset of the envs")
    p.add_argument("--seeds", type=int, default=None, help="at most this many seeds per entry")
    p.add_argument("--baseline", metavar="DIR", default=None,
                   help="also run actor_critic.py, a3c.py and sac.py from this checkout (e.g. a git worktree)")
    p.add_argument("--jobs", type=int, default=default_jobs(),
                   help="processes at once (default: the CPU cores this process may use)")
    p.add_argument("--run-timeout", type=float, default=None,
                   help="seconds before a run is killed and recorded as failed (default 4 h; --quick: 10 min)")
    p.add_argument("--out", default=None, help="folder for results.md, learning_curves.png and runs.json "
                   "(default: benchmarks/results/ or benchmarks/results/speed/; --quick: benchmarks/out/quick/)")
    p.add_argument("--workdir", default=os.path.join(HERE, "out"), help="folder for the raw run logs")
    p.add_argument("--records", default=None, help="folder of the run records (default: <out>/runs)")
    p.add_argument("--resume", action="store_true",
                   help="keep every run whose record matches its command and code; run only the others")
    p.add_argument("--report", action="store_true",
                   help="no training: the table and plot from the records that match the code (see --resume)")
    p.add_argument("--from-json", metavar="PATH", default=None,
                   help="no training: rebuild the table and plot from a runs.json")
    args = p.parse_args(argv)
    plan = SUITE if args.suite else SPEED
    algos = args.algos.split(",") if args.algos else ba.ALGO_ORDER
    envs = args.envs.split(",") if args.envs else [e for _, e, _, _ in plan]
    unknown = set(algos) - set(ba.ALGOS) or set(envs) - {e for _, e, _, _ in plan}
    if unknown:
        p.error(f"unknown --algos or --envs: {','.join(sorted(unknown))}")
    if (args.seeds is not None and args.seeds < 1) or args.jobs < 1:
        p.error("--seeds and --jobs must be at least 1")
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "actor_critic.py")):
        p.error(f"--baseline {args.baseline}: no actor_critic.py there")
    frac = QUICK_FRACTION["suite" if args.suite else "speed"] if args.quick else 1.0
    max_seeds = args.seeds or ((1 if args.suite else 2) if args.quick else None)
    args.plan = [(a, e, max(1000, int(b * frac)), min(s, max_seeds or s)) for a, e, b, s in plan
                 if a in algos and e in envs]
    if args.baseline:   # each right after its counterpart: the two run side by side, under the same load
        args.plan = [x for a, e, b, s in args.plan for x in [(a, e, b, s)] +
                     ([(a + ba.BASELINE, e, b, s)] if not a.endswith("_sb3") else [])]
    args.run_timeout = args.run_timeout or (600.0 if args.quick else 4 * 3600.0)
    if args.out is None:
        args.out = os.path.join(HERE, "out", "quick") if args.quick else \
            os.path.join(HERE, "results") if args.suite else os.path.join(HERE, "results", "speed")
    args.records = args.records or os.path.join(args.out, "runs")
    return args


# ----------------------------------------------------------------------------------------------
# Jobs: one subprocess per (algorithm, env, seed)
# ----------------------------------------------------------------------------------------------
def make_jobs(plan, workdir, keep_training, baseline=None, jobs=2):
    """The runs in the order they are started: seed by seed; within a seed, env by env, ours and SB3's
    interleaved (even seeds start with SB3's, so neither always goes first)."""
    out = []
    for seed in range(1, max(s for *_, s in plan) + 1):
        for env in dict.fromkeys(e for _, e, _, _ in plan):
            entries = [(a, b) for a, e, b, s in plan if e == env and s >= seed]
            if seed % 2 == 0:
                entries.sort(key=lambda x: not x[0].endswith("_sb3"))
            for algo, budget in entries:
                out.append(make_job(algo, env, seed, budget, workdir, keep_training, baseline, jobs))
    return out


def make_job(algo, env, seed, budget, workdir, keep_training, baseline=None, jobs=2):
    target, window = ba.rule(env)
    run_dir = os.path.join(workdir, env, algo, f"seed{seed}")
    common = ["--env-id", env, "--seed", str(seed), "--total-timesteps", str(budget)]
    common += ["--keep-training"] if keep_training else []
    common += ["--target-return", f"{target:g}", "--return-window", str(window)] if target is not None else []
    if algo.endswith("_sb3"):
        script = os.path.join(HERE, "sb3_anchor.py")
        cmd = [sys.executable, script, "--algo", algo, "--out", os.path.join(run_dir, "episodes.csv")]
        cmd += ["--eval-episodes", str(EVAL_EPISODES)] if keep_training else []
    else:
        name = algo.split("@")[0]
        script = os.path.join(baseline if algo.endswith(ba.BASELINE) else ROOT, f"{name}.py")
        cmd = [sys.executable, script, "--logdir", os.path.join(run_dir, "runs")]
        cmd += ["--num-workers", str(A3C_WORKERS)] if name == "a3c" else []
    cost = A3C_WORKERS if algo.split("@")[0] == "a3c" else 1
    evaluate = keep_training and not algo.endswith("_sb3") and not algo.endswith(ba.BASELINE)
    return dict(algo=algo, seed=seed, env_id=env, script=script, cmd=cmd + common, run_dir=run_dir,
                budget=budget, cost=min(cost, jobs), evaluate=evaluate)


def subprocess_env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env


def _tail(path, n=2000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def eval_returns(text):
    return [float(x) for x in re.findall(r"^eval episode \d+: return (-?[\d.]+(?:e[+-]?\d+)?)", text, re.M)]


def collect(job, returncode, t0, t_end, timed_out=False):
    """The run record of a finished job: its episodes (times measured from t0 = its process start)."""
    run = dict(algo=job["algo"], env_id=job["env_id"], seed=job["seed"], budget=job["budget"],
               cmd=command_text(job["cmd"]), returncode=returncode, wall_s=round(t_end - t0, 3), updates=None,
               episodes=[], eval_returns=[], started=round(t0, 1), ended=round(t_end, 1))
    stdout = _tail(os.path.join(job["run_dir"], "stdout.txt"), 20000)
    stderr = _tail(os.path.join(job["run_dir"], "stderr.txt"))
    try:
        if job["algo"].endswith("_sb3"):
            csv = os.path.join(job["run_dir"], "episodes.csv")
            run["episodes"] = ba.read_csv_curve(csv, t0)
            summary = os.path.splitext(csv)[0] + ".json"
            if os.path.exists(summary):
                with open(summary) as f:
                    s = json.load(f)
                run["updates"] = s.get("updates") if job["algo"] == "sac_sb3" else None
                run["eval_returns"] = s.get("eval_returns") or []
                run["wall_s"] = round(s["t_end"] - t0, 3)        # training only, as for ours
        else:
            folders = sorted(glob.glob(os.path.join(job["run_dir"], "runs", "*", "")))
            if folders:
                run["run_folder"] = os.path.relpath(folders[-1], ROOT)
                run["episodes"] = ba.read_tensorboard_curve(folders[-1], t0)
            if job["algo"].startswith("sac"):
                m = re.findall(r"^(\d+) gradient updates", stdout, re.M)
                run["updates"] = int(m[-1]) if m else None
            run["eval_returns"] = eval_returns(_tail(os.path.join(job["run_dir"], "eval.txt"), 20000))
    except Exception as e:  # a corrupt log must not lose the other runs
        stderr += f"\n(benchmark) could not read the run's log: {type(e).__name__}: {e}"
    m = re.findall(r"^((?:solved|reached|interrupted|stopped)[^\n]*after \d+ env steps[^\n]*)$", stdout, re.M)
    run["final_line"] = m[-1] if m else None
    if timed_out:
        run["status"], run["error"] = "timeout", f"killed after {t_end - t0:.0f}s (--run-timeout)\n" + stderr[-1500:]
    elif returncode != 0:
        run["status"], run["error"] = "failed", f"exit status {returncode}\n" + stderr[-1500:]
    else:
        run["status"] = "ok"
    return ba.summarize_run(run)


def command_text(cmd):
    """The command as a user would type it: python, paths relative to the repository root."""
    words = ["python" if c == sys.executable else
             os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT + os.sep) else c for c in cmd]
    return " ".join(shlex.quote(w) for w in words)


def missing_run(job):
    run = dict(algo=job["algo"], env_id=job["env_id"], seed=job["seed"], budget=job["budget"],
               cmd=command_text(job["cmd"]), returncode=None, wall_s=0.0, updates=None, episodes=[],
               status="missing", error=f"{job['script']} not found")
    return ba.summarize_run(run)


def describe(run):
    if run["status"] == "missing":
        return f"MISSING ({run['error']})"
    what = (f"reached at {ba.fmt_steps(run['solve_step'])} steps, {ba.fmt_seconds(run['solve_s'])}, stay "
            f"{ba.fmt_frac(run['stay'])}" if run["solved"] else f"not reached ({ba.fmt_steps(run['steps'])} steps)")
    what += f", final {ba.fmt_return(run['final_mean'])}"
    what += f", eval {ba.fmt_return(run['eval_mean'])}" if run.get("eval_mean") is not None else ""
    extra = f", {ba.fmt_rate(run['sps'])} steps/s" if run.get("sps") else ""
    extra += f", {run['updates_per_s']:.0f} updates/s" if run.get("updates_per_s") else ""
    status = "" if run["status"] == "ok" else f"  [{run['status'].upper()}: " + \
        (run["error"] or "").strip().splitlines()[-1][:200] + "]"
    return what + extra + f", {run['wall_s']:.0f} s" + status


def _start(cmd, run_dir, out_name, err_name, env):
    """Start ``cmd`` in its own process group, stdout and stderr into files of ``run_dir``."""
    with open(os.path.join(run_dir, out_name), "w") as out, open(os.path.join(run_dir, err_name), "w") as err:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env, start_new_session=True)


# ----------------------------------------------------------------------------------------------
# Records: one small JSON per finished run, committed, so that a suite outlives the machine it ran on
# ----------------------------------------------------------------------------------------------
def record_path(records, job):
    return os.path.join(records, job["env_id"], job["algo"], f"seed{job['seed']}.json")


def run_spec(job):
    """The command with this machine's run folder written as RUN_DIR: what a kept record must match."""
    return command_text([w.replace(job["run_dir"], "RUN_DIR") for w in job["cmd"]])


def code_key(job):
    """What a run measured. Ours: a hash of the script and the common.py beside it (any change makes the record
    stale). SB3's: its version and the zoo settings, so its runs stay valid until either changes."""
    if job["algo"].endswith("_sb3"):
        from sb3_anchor import zoo_settings
        return {"stable-baselines3": _version("stable-baselines3"),
                "settings": {k: str(v) for k, v in zoo_settings(job["algo"], job["env_id"]).items()}}
    h = hashlib.sha256()
    for path in (job["script"], os.path.join(os.path.dirname(job["script"]), "common.py")):
        if os.path.exists(path):
            with open(path, "rb") as f:
                h.update(f.read())
    return {"sha256": h.hexdigest()[:16]}


def read_record(records, job):
    """(run, state) of the job's record: 'fresh' (same command and code: reusable), 'stale', or (None, 'none')."""
    try:
        with open(record_path(records, job)) as f:
            run = json.load(f)
    except (OSError, ValueError):
        return None, "none"
    fresh = run.get("spec") == run_spec(job) and run.get("key") == code_key(job) and run.get("status") == "ok"
    return (ba.summarize_run(run), "fresh") if fresh else (run, "stale")


def write_record(records, job, run, meta):
    path = record_path(records, job)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    date = datetime.datetime.fromtimestamp(run["started"]).astimezone().strftime("%Y-%m-%d %H:%M %Z") \
        if run.get("started") else meta.get("date")
    ba.write_json_run(path, dict(run, spec=run_spec(job), key=code_key(job), batch=meta.get("batch"), date=date,
                                 machine=meta.get("machine"), versions=meta.get("versions"), commit=meta.get("commit")))


def run_jobs(jobs, slots, timeout, log=print, resume=False, records=None, meta=None):
    """Start ``jobs`` in order (strictly first-in first-out), at most ``slots`` cost units at a time. A job
    that trained successfully and asks for it is then evaluated (--load ... --eval-episodes 20), untimed.
    Each successful run's record goes to ``records`` (not a --baseline run's: its code is not ours);
    ``resume`` keeps the fresh records instead of rerunning."""
    pending, running, done = list(jobs), [], []
    env = subprocess_env()
    n = len(jobs)
    try:
        while pending or running:
            while pending and sum(r["job"]["cost"] for r in running) + pending[0]["cost"] <= slots:
                job = pending.pop(0)
                old, state = read_record(records, job) if resume and records else (None, "none")
                if state == "fresh":
                    done.append(old)
                    log(f"[{len(done)}/{n}] {job['algo']} {job['env_id']} seed {job['seed']}: (kept) {describe(old)}")
                    continue
                if not os.path.exists(job["script"]):
                    done.append(missing_run(job))
                    log(f"[{len(done)}/{n}] {job['algo']} {job['env_id']} seed {job['seed']}: {describe(done[-1])}")
                    continue
                os.makedirs(job["run_dir"], exist_ok=True)
                for old in glob.glob(os.path.join(job["run_dir"], "runs", "*")) + \
                        glob.glob(os.path.join(job["run_dir"], "eval.txt")):  # a rerun: forget old logs
                    shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.remove(old)
                t0 = time.time()   # the reference for every wall-second of this run
                proc = _start(job["cmd"], job["run_dir"], "stdout.txt", "stderr.txt", env)
                running.append(dict(job=job, proc=proc, t0=t0, phase="train"))
            time.sleep(0.05)
            for r in list(running):
                rc = r["proc"].poll()
                timed_out = rc is None and time.time() - r["t0"] > timeout
                if timed_out:
                    _kill(r["proc"])
                    rc = r["proc"].wait()
                if rc is None:
                    continue
                job = r["job"]
                if r["phase"] == "train":
                    r["t_end"], r["rc"], r["timed_out"] = time.time(), rc, timed_out
                    folders = sorted(glob.glob(os.path.join(job["run_dir"], "runs", "*", "")))
                    if job["evaluate"] and rc == 0 and folders:
                        cmd = [sys.executable, job["script"], "--load", folders[-1], "--eval-episodes",
                               str(EVAL_EPISODES)]
                        r.update(phase="eval", proc=_start(cmd, job["run_dir"], "eval.txt", "eval_stderr.txt", env))
                        continue
                running.remove(r)
                done.append(collect(job, r["rc"], r["t0"], r["t_end"], r["timed_out"]))
                if records and done[-1]["status"] == "ok" and not job["algo"].endswith(ba.BASELINE):
                    write_record(records, job, done[-1], meta or {})
                log(f"[{len(done)}/{n}] {job['algo']} {job['env_id']} seed {job['seed']}: {describe(done[-1])}")
    except KeyboardInterrupt:
        for r in running:
            _kill(r["proc"])
            r["proc"].wait()
        log(f"interrupted: {len(done)} of {n} runs finished; writing their results")
        raise _Interrupted(done)
    return done


class _Interrupted(Exception):
    def __init__(self, done):
        self.done = done


def _kill(proc):
    """End a run and its children (a3c's workers): its own process group, started by us."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------------------------
# Provenance and output
# ----------------------------------------------------------------------------------------------
def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    return f"{cpu}, {default_jobs()} usable cores ({os.cpu_count()} online), {platform.system()} {platform.release()}"


def _version(pkg):
    from importlib import metadata
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def versions():
    return ", ".join([f"Python {platform.python_version()}"] + [
        f"{pkg} {_version(pkg) or '(not installed)'}"
        for pkg in ("torch", "gymnasium", "stable-baselines3", "numpy", "mujoco", "box2d")])


def git_commit(path=ROOT):
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_outputs(out_dir, meta, runs, runs_json=True):
    """results.md, learning_curves.png and (unless the runs are already records, as for --report) runs.json."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = ba.write_json(os.path.join(out_dir, "runs.json"), meta, runs) if runs_json else "the records"
    png = os.path.join(out_dir, "learning_curves.png")
    png_name = None
    try:
        if runs:
            ba.plot_curves(runs, png)
            png_name = os.path.basename(png)
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -r benchmarks/requirements.txt)", file=sys.stderr)
    md = ba.write_markdown(os.path.join(out_dir, "results.md"), meta, runs, png_name)
    print("\n" + md)
    print(f"wrote {os.path.join(out_dir, 'results.md')}, {json_path}" + (f", {png}" if png_name else ""))


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        meta, runs = ba.load_json(args.from_json)
        write_outputs(args.out, meta, runs)
        return 0
    jobs = make_jobs(args.plan, os.path.abspath(args.workdir), args.suite, args.baseline, args.jobs)
    now = datetime.datetime.now().astimezone()
    meta = dict(command="python benchmarks/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                date=now.strftime("%Y-%m-%d %H:%M %Z"), batch=f"{now:%Y-%m-%dT%H:%M:%S%z} {platform.node()}",
                machine=machine_info(), versions=versions(), commit=git_commit(), jobs=args.jobs,
                quick=args.quick, keep_training=args.suite, plan=args.plan,
                baseline=args.baseline and f"{args.baseline} (commit {git_commit(args.baseline)})")
    if args.report:
        found = [read_record(args.records, job) for job in jobs if not job["algo"].endswith(ba.BASELINE)]
        runs = [run for run, state in found if state == "fresh"]
        stale = sum(state == "stale" for _, state in found)
        if runs:   # what the records say of themselves, not of the machine that reads them
            dates = sorted(r.get("date") or "?" for r in runs)
            meta.update(date=f"runs from {dates[0]} to {dates[-1]}",
                        machine=" / ".join(sorted({r.get("machine") or "?" for r in runs})),
                        versions=" / ".join(sorted({r.get("versions") or "?" for r in runs})),
                        commit=" ".join(sorted({r.get("commit") or "?" for r in runs})) + " (per record)")
        if len(runs) < len(jobs):
            meta["partial"] = f"{len(runs)} of {len(jobs)} runs have a record of this code" + \
                (f" ({stale} stale records, of code changed since, left out)" if stale else "")
        write_outputs(args.out, meta, runs, runs_json=False)
        return 0
    if any(a.endswith("_sb3") for a, *_ in args.plan):
        try:
            import stable_baselines3  # noqa: F401  (fail now, not after an hour of our runs)
        except ImportError:
            sys.exit("stable-baselines3 is not installed: pip install -r benchmarks/requirements.txt "
                     "(or leave the SB3 runs out with --algos)")
    print(f"{len(jobs)} runs, {args.jobs} at a time; logs in {args.workdir}", flush=True)
    t = time.time()
    try:
        runs = run_jobs(jobs, args.jobs, args.run_timeout, log=lambda s: print(s, flush=True), resume=args.resume,
                        records=args.records, meta=meta)
    except _Interrupted as e:
        meta["interrupted"] = True
        if e.done:
            write_outputs(args.out, meta, e.done)
        return 130
    meta["total_s"] = round(time.time() - t, 1)
    write_outputs(args.out, meta, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
