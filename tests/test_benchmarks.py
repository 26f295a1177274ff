"""benchmarks/: solve detection, table, JSON and plot on synthetic learning curves (no training, fast)."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)

import bench_analysis as ba  # noqa: E402

_spec = importlib.util.spec_from_file_location("benchmarks_run", os.path.join(BENCH, "run.py"))
bench_run = importlib.util.module_from_spec(_spec)   # under its own name: no top-level module called "run"
_spec.loader.exec_module(bench_run)


def cartpole_episodes(solve_at_episode, n, steps_per_ep=200, sec_per_ep=0.01, t_start=1.5):
    """Returns 100, then 500 from episode ``solve_at_episode`` - 100 on: the mean of the last 100 is
    100 + 4 * n500, which first reaches 475 with n500 = 94, i.e. at episode ``solve_at_episode`` - 6."""
    eps = []
    for i in range(n):
        ret = 500.0 if i >= solve_at_episode - 100 else 100.0
        eps.append(((i + 1) * steps_per_ep, t_start + (i + 1) * sec_per_ep, ret))
    return eps


def make_run(algo, seed, episodes, status="ok", updates=None, error=None):
    return ba.summarize_run(dict(algo=algo, env_id=ba.ALGOS[algo]["env"], seed=seed, status=status,
                                 episodes=episodes, updates=updates, error=error, wall_s=1.0))


def synthetic_runs():
    runs = [make_run("actor_critic", s, cartpole_episodes(200 + 10 * s, 200 + 10 * s)) for s in (1, 2, 3)]
    runs += [make_run("a2c_sb3", 1, cartpole_episodes(400, 400)), make_run("a2c_sb3", 2, cartpole_episodes(500, 500)),
             make_run("a2c_sb3", 3, [(200 * (i + 1), 2.0 + i, 20.0) for i in range(300)])]   # never solves
    pend = lambda first_good, n: [((i + 1) * 200, 3.0 + i, -150.0 if i >= first_good else -1200.0)  # noqa: E731
                                  for i in range(n)]
    runs += [make_run("sac", 1, pend(10, 20), updates=3000), make_run("sac", 2, pend(12, 22), updates=3400)]
    runs += [make_run("sac_sb3", 1, pend(20, 30), updates=5900),
             make_run("sac_sb3", 2, [], status="failed", error="exit status 1\nTraceback...\nValueError: boom")]
    return runs


# ----------------------------------------------------------------------------------------------
# Solve detection
# ----------------------------------------------------------------------------------------------
def test_solve_index_needs_a_full_window_and_finds_the_first_crossing():
    assert ba.solve_index([500.0] * 99, 475, 100) is None          # 99 perfect episodes: not yet
    assert ba.solve_index([500.0] * 100, 475, 100) == 99
    r = [0.0] * 5 + [500.0] * 100
    # the mean of the last 100 first reaches 475 when 95 of them are 500 -> at index 5 + 95 - 1
    assert ba.solve_index(r, 475, 100) == 99
    assert ba.solve_index([-300.0] * 9 + [-100.0], -200, 10) is None   # window 10 not full
    assert ba.solve_index([-250.0] * 5 + [-150.0] * 5, -200, 10) == 9  # exactly on the target counts
    assert ba.solve_index([], 475, 100) is None


def test_rolling_mean_matches_a_plain_loop():
    r = np.random.default_rng(0).normal(size=57)
    expect = [np.mean(r[max(0, i - 9):i + 1]) for i in range(len(r))]
    np.testing.assert_allclose(ba.rolling_mean(r, 10), expect)


def test_summarize_run_steps_seconds_and_rates():
    run = make_run("actor_critic", 1, cartpole_episodes(250, 300))
    assert run["solved"] and run["solve_episode"] == 244
    assert run["solve_step"] == 244 * 200
    assert run["solve_s"] == pytest.approx(1.5 + 244 * 0.01)
    assert run["steps"] == 300 * 200 and run["sps"] == pytest.approx(60000 / (1.5 + 3.0))
    assert run["updates_per_s"] is None
    sac = make_run("sac", 1, [((i + 1) * 200, 2.0 * (i + 1), -150.0) for i in range(10)], updates=1000)
    assert sac["solved"] and sac["solve_step"] == 2000 and sac["updates_per_s"] == pytest.approx(1000 / 20.0)
    empty = make_run("sac", 3, [], status="failed")
    assert not empty["solved"] and empty["steps"] is None and empty["sps"] is None


# ----------------------------------------------------------------------------------------------
# Aggregation and the table
# ----------------------------------------------------------------------------------------------
def test_aggregate_counts_unsolved_runs_as_infinity():
    agg = ba.aggregate(synthetic_runs())
    assert list(agg) == ["actor_critic", "a2c_sb3", "sac", "sac_sb3"]
    ac, a2c = agg["actor_critic"], agg["a2c_sb3"]
    assert (ac["n"], ac["n_solved"], ac["n_failed"]) == (3, 3, 0)
    assert ac["steps"] == (214 * 200.0, 204 * 200.0, 224 * 200.0)   # solved at episode n - 6
    assert (a2c["n_solved"], a2c["steps"][0], a2c["steps"][2]) == (2, 494 * 200.0, math.inf)
    assert agg["sac_sb3"]["n_failed"] == 1 and agg["sac_sb3"]["seconds"][0] == math.inf  # 1 of 2: median inf
    assert agg["sac"]["updates_per_s"] == pytest.approx(np.median([3000 / 22.0, 3400 / 24.0]))


def test_markdown_table_rows_ratios_and_unsolved_cells():
    table = ba.markdown_table(ba.aggregate(synthetic_runs()))
    lines = table.splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 10
    row = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]}
    ac, a2c, sac, sac_sb3 = (row["actor_critic.py"], row["SB3 A2C (rl-zoo)"], row["sac.py"],
                             row["SB3 SAC (rl-zoo)"])
    assert ac[0] == "CartPole-v1" and ac[2] == "3/3" and ac[3] == "43k (41k–45k)"
    assert ac[5] == f"{214 / 494:.2f}×"                      # ours/SB3 of the step medians
    assert a2c[2] == "2/3" and a2c[3] == "99k (79k–unsolved)" and a2c[5] == "(anchor)"
    assert sac_sb3[2] == "1/2 (1 failed)" and sac_sb3[3] == "— (6.0k–unsolved)"
    assert sac[5] == "n/a" and sac[8] != "—"                                  # anchor median unreached
    assert "a3c.py (2 workers)" not in row                                    # only algorithms that ran


def test_formatting():
    assert (ba.fmt_steps(4600), ba.fmt_steps(140000), ba.fmt_steps(1.5e6), ba.fmt_steps(math.inf)) == \
        ("4.6k", "140k", "1.50M", "—")
    assert (ba.fmt_seconds(17.73), ba.fmt_seconds(612.4), ba.fmt_rate(7900), ba.fmt_rate(75.2)) == \
        ("17.7 s", "612 s", "7.9k", "75")


def test_json_round_trip_and_markdown(tmp_path):
    runs = synthetic_runs()
    meta = dict(command="python benchmarks/run.py --quick", seeds=3)
    path = ba.write_json(str(tmp_path / "runs.json"), meta, runs)
    with open(path) as f:
        json.load(f)                                                   # valid JSON
    meta2, runs2 = ba.load_json(path)
    assert meta2 == meta and len(runs2) == len(runs)
    assert [r["solve_step"] for r in runs2] == [r["solve_step"] for r in runs]
    text = ba.write_markdown(str(tmp_path / "results.md"), meta2, runs2, png_name=None)
    assert ba.markdown_table(ba.aggregate(runs)) in text
    assert "sac_sb3 seed 2: failed" in text and "ValueError: boom" in text
    assert "![learning curves]" not in text


# ----------------------------------------------------------------------------------------------
# Reading the curves
# ----------------------------------------------------------------------------------------------
def test_read_csv_curve_skips_a_half_written_line(tmp_path):
    p = tmp_path / "episodes.csv"
    p.write_text("step,time,seconds,return,length\n200,1000.5,2.5,-1200.0,200\n400,1001.5,3.5,-900.5,200\n600,100")
    assert ba.read_csv_curve(str(p), t0=1000.0) == [(200, 0.5, -1200.0), (400, 1.5, -900.5)]
    assert ba.read_csv_curve(str(tmp_path / "missing.csv"), 0.0) == []


def test_read_tensorboard_curve_keeps_every_event_in_order(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    w = SummaryWriter(str(tmp_path))
    steps = [8, 8, 16, 12, 24]                      # equal and out-of-order steps (vector envs, a3c) are kept
    for i, s in enumerate(steps):
        w.add_scalar("charts/episodic_return", float(i), s, walltime=100.0 + i)
    w.add_scalar("charts/SPS", 1.0, 24)
    w.close()
    eps = ba.read_tensorboard_curve(str(tmp_path), t0=99.0)
    assert [(e[0], e[2]) for e in eps] == [(s, float(i)) for i, s in enumerate(steps)]
    assert [e[1] for e in eps] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ba.read_tensorboard_curve(str(tmp_path), 0.0, tag="no/such_tag") == []


def test_curve_on_grid_is_nan_before_and_held_after():
    eps = [(10, 1.0, 0.0), (20, 2.0, 10.0)]
    out = ba.curve_on_grid(eps, window=10, grid=np.array([0.0, 10.0, 15.0, 20.0, 100.0]))
    assert np.isnan(out[0]) and list(out[1:]) == [0.0, 0.0, 5.0, 5.0]
    out = ba.curve_on_grid(eps, window=10, grid=np.array([0.5, 1.5, 9.0]), x="seconds")
    assert np.isnan(out[0]) and list(out[1:]) == [0.0, 5.0]


def test_plot_writes_a_small_png(tmp_path):
    pytest.importorskip("matplotlib")                # the plot only; everything above runs without it
    path = ba.plot_curves(synthetic_runs(), str(tmp_path / "curves.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) < 300_000


def test_table_code_imports_without_matplotlib_and_sb3():
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['stable_baselines3'] = None; "
            f"sys.path.insert(0, {BENCH!r}); import bench_analysis, run; "
            "print(bench_analysis.markdown_table({}).count('|'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "20", proc.stderr


# ----------------------------------------------------------------------------------------------
# run.py: job order and failure handling (with stand-in commands, no training)
# ----------------------------------------------------------------------------------------------
def test_make_jobs_interleaves_ours_and_sb3_and_a3c_runs_alone(tmp_path):
    jobs = bench_run.make_jobs(ba.ALGO_ORDER, 2, bench_run.BUDGETS, str(tmp_path), jobs=2)
    assert [(j["algo"], j["seed"]) for j in jobs] == \
        [(a, 1) for a in bench_run.ORDER] + [(a, 2) for a in bench_run.ORDER_ODD]
    a3c = next(j for j in jobs if j["algo"] == "a3c")
    assert a3c["cost"] == 2 and "--num-workers" in a3c["cmd"] and a3c["cmd"][a3c["cmd"].index("--num-workers") + 1] == "2"
    sac = next(j for j in jobs if j["algo"] == "sac")
    assert sac["cmd"][1].endswith("sac.py") and "--logdir" in sac["cmd"] and "--seed" in sac["cmd"]
    assert sac["cmd"][sac["cmd"].index("--target-return") + 1] == "-200"
    sb3 = next(j for j in jobs if j["algo"] == "a2c_sb3")
    assert sb3["cmd"][1].endswith("sb3_anchor.py") and sb3["cost"] == 1
    only = bench_run.make_jobs(["actor_critic", "a2c_sb3"], 1, bench_run.BUDGETS, str(tmp_path))
    assert [j["algo"] for j in only] == ["actor_critic", "a2c_sb3"]


def test_run_jobs_records_missing_and_failing_scripts(tmp_path):
    base = dict(env_id="CartPole-v1", budget=100, cost=1)
    jobs = [dict(base, algo="actor_critic", seed=1, script=str(tmp_path / "nope.py"),
                 cmd=[sys.executable, str(tmp_path / "nope.py")], run_dir=str(tmp_path / "a")),
            dict(base, algo="actor_critic", seed=2, script=sys.executable, run_dir=str(tmp_path / "b"),
                 cmd=[sys.executable, "-c", "import sys; print('hello'); sys.exit('boom: no such option')"])]
    runs = bench_run.run_jobs(jobs, slots=2, timeout=60, log=lambda s: None)
    by_seed = {r["seed"]: r for r in runs}
    assert by_seed[1]["status"] == "missing" and "nope.py not found" in by_seed[1]["error"]
    assert by_seed[2]["status"] == "failed" and by_seed[2]["returncode"] == 1
    assert "boom: no such option" in by_seed[2]["error"] and not by_seed[2]["solved"]
    table = ba.markdown_table(ba.aggregate(runs))
    assert "0/2 (2 failed)" in table


def test_parse_args_quick_budgets_and_algos():
    args = bench_run.parse_args(["--quick", "--algos", "actor_critic,a2c_sb3", "--budget", "a2c_sb3=1000"])
    assert args.seeds == 2 and args.algos == ["actor_critic", "a2c_sb3"]
    assert args.budgets["a2c_sb3"] == 1000 and args.budgets["sac"] == bench_run.QUICK_BUDGETS["sac"]
    assert args.out.endswith(os.path.join("out", "quick"))
    assert bench_run.parse_args([]).seeds == 10
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--algos", "ppo"])


def test_sac_updates_from_stdout_or_config(tmp_path):
    assert bench_run.sac_updates("solved ...\n4321 gradient updates, 150 updates/s\n", None, []) == 4321
    (tmp_path / "config.json").write_text(json.dumps({"learning_starts": 1000, "utd_ratio": 1.0}))
    assert bench_run.sac_updates("", str(tmp_path), [(3000, 10.0, -150.0)]) == 2001
    assert bench_run.sac_updates("", None, []) is None
    assert bench_run.command_text([sys.executable, os.path.join(ROOT, "sac.py"), "--seed", "1"]) == \
        "python sac.py --seed 1"


def test_run_jobs_kills_a_run_past_its_timeout(tmp_path):
    job = dict(algo="sac_sb3", env_id="Pendulum-v1", seed=1, budget=100, cost=1, script=sys.executable,
               run_dir=str(tmp_path / "c"), cmd=[sys.executable, "-c", "import time; time.sleep(60)"])
    os.makedirs(job["run_dir"])
    (tmp_path / "c" / "episodes.csv").write_text("step,time,seconds,return,length\n")
    (run,) = bench_run.run_jobs([job], slots=1, timeout=0.5, log=lambda s: None)
    assert run["status"] == "timeout" and run["wall_s"] < 10 and run["episodes"] == []
