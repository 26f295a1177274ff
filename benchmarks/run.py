"""Learning-speed benchmark: our scripts against Stable-Baselines3, in the same run on the same machine.

    pip install -r benchmarks/requirements.txt
    python benchmarks/run.py --seeds 10          # the README's numbers (30-60 minutes on 2 cores)
    python benchmarks/run.py --quick             # 2 seeds, small budgets: a few minutes
    python benchmarks/run.py --algos actor_critic,a2c_sb3 --seeds 3
    python benchmarks/run.py --from-json benchmarks/results/runs.json    # redo table and plot only

Runs, as subprocesses with default hyperparameters, a user's command line for each seed:

    actor_critic.py (CartPole-v1)   a3c.py --num-workers 2 (CartPole-v1)   sac.py (Pendulum-v1)

and the SB3 anchors of benchmarks/sb3_anchor.py (A2C on CartPole-v1 and SAC on Pendulum-v1 with the rl-zoo
hyperparameters), all on the CPU with one torch thread per process, at most --jobs processes at a time
(a3c's 2 workers count as 2), ours and SB3's interleaved so that machine noise hits both alike. Every run
stops once solved (mean of the last 100 returns >= 475 on CartPole-v1, of the last 10 >= -200 on
Pendulum-v1) or at its budget. Writes to --out (default benchmarks/results/): results.md (the table),
learning_curves.png and runs.json (every run with its episodes); raw logs go to --workdir.
"""
import argparse
import datetime
import glob
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

# Env-step budgets (caps; runs stop earlier once solved).
BUDGETS = {"actor_critic": 500_000, "a3c": 500_000, "a2c_sb3": 500_000, "sac": 30_000, "sac_sb3": 30_000}
QUICK_BUDGETS = {"actor_critic": 150_000, "a3c": 150_000, "a2c_sb3": 150_000, "sac": 5_000, "sac_sb3": 5_000}
A3C_WORKERS = 2
# Per seed, the order runs are started in; odd seeds swap ours and SB3's so neither always goes first.
ORDER = ["actor_critic", "a2c_sb3", "sac", "sac_sb3", "a3c"]
ORDER_ODD = ["a2c_sb3", "actor_critic", "sac_sb3", "sac", "a3c"]


def default_jobs():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=None, help="seeds 1..N per algorithm (default 10; --quick: 2)")
    p.add_argument("--quick", action="store_true",
                   help=f"small budgets {QUICK_BUDGETS} and 2 seeds: checks the pipeline in a few minutes")
    p.add_argument("--algos", default=",".join(ba.ALGO_ORDER),
                   help="comma-separated subset of " + ",".join(ba.ALGO_ORDER))
    p.add_argument("--budget", action="append", default=[], metavar="ALGO=STEPS",
                   help="override an env-step budget, e.g. --budget sac=20000 (repeatable)")
    p.add_argument("--jobs", type=int, default=default_jobs(),
                   help="processes at once (default: the CPU cores this process may use)")
    p.add_argument("--run-timeout", type=float, default=None,
                   help="seconds before a run is killed and recorded as failed (default 1800; --quick: 600)")
    p.add_argument("--out", default=None, help="folder for results.md, learning_curves.png and runs.json "
                   "(default: benchmarks/results/; --quick: benchmarks/out/quick/, so as not to replace them)")
    p.add_argument("--workdir", default=os.path.join(HERE, "out"),
                   help="folder for the raw run logs (TensorBoard folders, SB3 CSVs, stdout/stderr)")
    p.add_argument("--from-json", metavar="PATH", default=None,
                   help="no training: rebuild the table and plot from a runs.json")
    args = p.parse_args(argv)
    args.algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = [a for a in args.algos if a not in ba.ALGOS]
    if unknown:
        p.error(f"unknown --algos {','.join(unknown)}; choose from {','.join(ba.ALGO_ORDER)}")
    args.seeds = args.seeds if args.seeds is not None else (2 if args.quick else 10)
    if args.seeds < 1 or args.jobs < 1:
        p.error("--seeds and --jobs must be at least 1")
    args.budgets = dict(QUICK_BUDGETS if args.quick else BUDGETS)
    for item in args.budget:
        algo, _, steps = item.partition("=")
        if algo not in ba.ALGOS or not steps.isdigit():
            p.error(f"--budget {item}: expected ALGO=STEPS with ALGO one of {','.join(ba.ALGO_ORDER)}")
        args.budgets[algo] = int(steps)
    args.run_timeout = args.run_timeout or (600.0 if args.quick else 1800.0)
    if args.out is None:
        args.out = os.path.join(HERE, "out", "quick") if args.quick else os.path.join(HERE, "results")
    return args


# ----------------------------------------------------------------------------------------------
# Jobs: one subprocess per (algorithm, seed)
# ----------------------------------------------------------------------------------------------
def make_jobs(algos, seeds, budgets, workdir, jobs=2):
    """The runs in the order they are started: seed by seed, ours and SB3's interleaved."""
    out = []
    for seed in range(1, seeds + 1):
        for algo in (ORDER_ODD if seed % 2 == 0 else ORDER):
            if algo not in algos:
                continue
            env_id = ba.ALGOS[algo]["env"]
            target, window = ba.SOLVE_RULES[env_id]
            run_dir = os.path.join(workdir, algo, f"seed{seed}")
            common = ["--seed", str(seed), "--total-timesteps", str(budgets[algo]),
                      "--target-return", f"{target:g}", "--return-window", str(window)]
            if algo.endswith("_sb3"):
                script = os.path.join(HERE, "sb3_anchor.py")
                cmd = [sys.executable, script, "--algo", algo, "--out", os.path.join(run_dir, "episodes.csv")]
            else:
                script = os.path.join(ROOT, f"{algo}.py")
                cmd = [sys.executable, script, "--logdir", os.path.join(run_dir, "runs")]
                if algo == "a3c":
                    cmd += ["--num-workers", str(A3C_WORKERS)]
            cost = A3C_WORKERS if algo == "a3c" else 1
            out.append(dict(algo=algo, seed=seed, env_id=env_id, script=script, cmd=cmd + common,
                            run_dir=run_dir, budget=budgets[algo], cost=min(cost, jobs)))
    return out


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


def collect(job, returncode, t0, t_end, timed_out=False):
    """The run record of a finished job: its episodes (times measured from t0 = its process start)."""
    run = dict(algo=job["algo"], env_id=job["env_id"], seed=job["seed"], budget=job["budget"],
               cmd=command_text(job["cmd"]),
               returncode=returncode, wall_s=round(t_end - t0, 3), updates=None, episodes=[])
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
                run["learning_starts"] = s.get("learning_starts")
        else:
            folders = sorted(glob.glob(os.path.join(job["run_dir"], "runs", "*", "")))
            if folders:
                run["run_folder"] = os.path.relpath(folders[-1], ROOT)
                run["episodes"] = ba.read_tensorboard_curve(folders[-1], t0)
            if job["algo"] == "sac":
                run["updates"] = sac_updates(stdout, folders[-1] if folders else None, run["episodes"])
    except Exception as e:  # a corrupt log must not lose the other runs
        stderr += f"\n(benchmark) could not read the run's log: {type(e).__name__}: {e}"
    m = re.findall(r"^((?:solved|reached|interrupted|stopped)[^\n]*after \d+ env steps[^\n]*)$", stdout, re.M)
    run["final_line"] = m[-1] if m else None
    if timed_out:
        run["status"] = "timeout"
        run["error"] = f"killed after {t_end - t0:.0f}s (--run-timeout)\n" + stderr[-1500:]
    elif returncode != 0:
        run["status"] = "failed"
        run["error"] = f"exit status {returncode}\n" + stderr[-1500:]
    else:
        run["status"] = "ok"
    return ba.summarize_run(run)


def command_text(cmd):
    """The command as a user would type it: python, paths relative to the repository root."""
    words = ["python" if c == sys.executable else
             os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT + os.sep) else c for c in cmd]
    return " ".join(shlex.quote(w) for w in words)


def sac_updates(stdout, run_folder, episodes):
    """sac.py's gradient updates: the count it prints at the end ("N gradient updates"), else estimated
    from its config.json: utd_ratio updates per env step from learning_starts on."""
    m = re.findall(r"^(\d+) gradient updates", stdout, re.M)
    if m:
        return int(m[-1])
    if run_folder and episodes:
        try:
            with open(os.path.join(run_folder, "config.json")) as f:
                cfg = json.load(f)
            return int(max(0, episodes[-1][0] - int(cfg["learning_starts"]) + 1) * float(cfg.get("utd_ratio", 1.0)))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def missing_run(job):
    run = dict(algo=job["algo"], env_id=job["env_id"], seed=job["seed"], budget=job["budget"],
               cmd=command_text(job["cmd"]), returncode=None, wall_s=0.0, updates=None, episodes=[],
               status="missing", error=f"{os.path.relpath(job['script'], ROOT)} not found")
    return ba.summarize_run(run)


def describe(run):
    if run["status"] == "missing":
        return f"MISSING ({run['error']})"
    if run["solved"]:
        what = f"solved at {ba.fmt_steps(run['solve_step'])} steps, {ba.fmt_seconds(run['solve_s'])}"
    else:
        what = f"not solved ({ba.fmt_steps(run['steps'])} steps, {run['num_episodes']} episodes)"
    extra = f", {ba.fmt_rate(run['sps'])} steps/s" if run.get("sps") else ""
    if run.get("updates_per_s"):
        extra += f", {run['updates_per_s']:.0f} updates/s"
    status = "" if run["status"] == "ok" else f"  [{run['status'].upper()}: " + \
        (run["error"] or "").strip().splitlines()[-1][:200] + "]"
    return what + extra + f", process {run['wall_s']:.1f} s" + status


def run_jobs(jobs, slots, timeout, log=print):
    """Start ``jobs`` in order (strictly first-in first-out), at most ``slots`` cost units at a time."""
    pending, running, done = list(jobs), [], []
    env = subprocess_env()
    n = len(jobs)
    try:
        while pending or running:
            while pending and sum(r["job"]["cost"] for r in running) + pending[0]["cost"] <= slots:
                job = pending.pop(0)
                if not os.path.exists(job["script"]):
                    done.append(missing_run(job))
                    log(f"[{len(done)}/{n}] {job['algo']} seed {job['seed']}: {describe(done[-1])}")
                    continue
                os.makedirs(job["run_dir"], exist_ok=True)
                for old in glob.glob(os.path.join(job["run_dir"], "runs", "*")):  # a rerun: forget old logs
                    shutil.rmtree(old, ignore_errors=True)
                out = open(os.path.join(job["run_dir"], "stdout.txt"), "w")
                err = open(os.path.join(job["run_dir"], "stderr.txt"), "w")
                t0 = time.time()   # the reference for every wall-second of this run
                proc = subprocess.Popen(job["cmd"], cwd=ROOT, stdout=out, stderr=err, env=env,
                                        start_new_session=True)
                running.append(dict(job=job, proc=proc, t0=t0, files=(out, err)))
            time.sleep(0.05)
            for r in list(running):
                rc = r["proc"].poll()
                timed_out = rc is None and time.time() - r["t0"] > timeout
                if timed_out:
                    _kill(r["proc"])
                    rc = r["proc"].wait()
                if rc is None:
                    continue
                t_end = time.time()
                for f in r["files"]:
                    f.close()
                running.remove(r)
                done.append(collect(r["job"], rc, r["t0"], t_end, timed_out))
                log(f"[{len(done)}/{n}] {r['job']['algo']} seed {r['job']['seed']}: {describe(done[-1])}")
    except KeyboardInterrupt:
        for r in running:
            _kill(r["proc"])
            r["proc"].wait()
            for f in r["files"]:
                f.close()
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
        proc.wait(5)
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


def versions():
    from importlib import metadata
    out = [f"Python {platform.python_version()}"]
    for pkg in ("torch", "gymnasium", "stable-baselines3", "numpy"):
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    return ", ".join(out)


def git_commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_outputs(out_dir, meta, runs):
    os.makedirs(out_dir, exist_ok=True)
    json_path = ba.write_json(os.path.join(out_dir, "runs.json"), meta, runs)
    png = os.path.join(out_dir, "learning_curves.png")
    png_name = None
    try:
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
    if any(a.endswith("_sb3") for a in args.algos):
        try:
            import stable_baselines3  # noqa: F401  (fail now, not after an hour of our runs)
        except ImportError:
            sys.exit("stable-baselines3 is not installed: pip install -r benchmarks/requirements.txt "
                     "(or leave the SB3 anchors out with --algos)")
    jobs = make_jobs(args.algos, args.seeds, args.budgets, os.path.abspath(args.workdir), args.jobs)
    meta = dict(command="python benchmarks/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                machine=machine_info(), versions=versions(), commit=git_commit(), seeds=args.seeds,
                jobs=args.jobs, quick=args.quick, budgets={a: args.budgets[a] for a in args.algos},
                solve_rules={e: dict(target=t, window=w) for e, (t, w) in ba.SOLVE_RULES.items()})
    print(f"{len(jobs)} runs ({', '.join(args.algos)}; seeds 1..{args.seeds}), {args.jobs} at a time; "
          f"logs in {args.workdir}", flush=True)
    t = time.time()
    try:
        runs = run_jobs(jobs, args.jobs, args.run_timeout, log=lambda s: print(s, flush=True))
    except _Interrupted as e:
        meta["interrupted"] = True
        runs = e.done
        if runs:
            write_outputs(args.out, meta, runs)
        return 130
    meta["total_s"] = round(time.time() - t, 1)
    write_outputs(args.out, meta, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
