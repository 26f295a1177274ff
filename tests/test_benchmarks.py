"""benchmarks/: metrics, tables, JSON and plot on synthetic learning curves, and the job runner with stand-in
commands (no training, fast)."""
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
ENVS = {"actor_critic": "CartPole-v1", "a3c": "CartPole-v1", "a2c_sb3": "CartPole-v1", "sac": "Pendulum-v1",
        "sac_sb3": "Pendulum-v1"}


def cartpole_episodes(solve_at_episode, n, steps_per_ep=200, sec_per_ep=0.01, t_start=1.5, dip_at=None):
    """Returns 100, then 500 from episode ``solve_at_episode`` - 100 on (and 0 from ``dip_at`` on): the mean of
    the last 100 is 100 + 4 * n500, which first reaches 475 with n500 = 94, i.e. at episode ``solve_at_episode`` - 6."""
    eps = []
    for i in range(n):
        ret = 500.0 if i >= solve_at_episode - 100 else 100.0
        ret = 0.0 if dip_at is not None and i >= dip_at else ret
        eps.append(((i + 1) * steps_per_ep, t_start + (i + 1) * sec_per_ep, ret))
    return eps


def make_run(algo, seed, episodes, status="ok", updates=None, error=None, env=None, evals=None, wall=1.0):
    return ba.summarize_run(dict(algo=algo, env_id=env or ENVS[algo.split("@")[0]], seed=seed, status=status,
                                 episodes=episodes, updates=updates, error=error, wall_s=wall,
                                 eval_returns=evals or []))


def synthetic_runs():
    runs = [make_run("actor_critic", s, cartpole_episodes(200 + 10 * s, 200 + 10 * s), evals=[500.0] * 20)
            for s in (1, 2, 3)]
    runs += [make_run("a2c_sb3", 1, cartpole_episodes(400, 400)), make_run("a2c_sb3", 2, cartpole_episodes(500, 500)),
             make_run("a2c_sb3", 3, [(200 * (i + 1), 2.0 + i, 20.0) for i in range(300)])]   # never solves
    pend = lambda first_good, n: [((i + 1) * 200, 3.0 + i, -150.0 if i >= first_good else -1200.0)  # noqa: E731
                                  for i in range(n)]
    runs += [make_run("sac", 1, pend(10, 20), updates=3000), make_run("sac", 2, pend(12, 22), updates=3400)]
    runs += [make_run("sac_sb3", 1, pend(20, 30), updates=5900),
             make_run("sac_sb3", 2, [], status="failed", error="exit status 1\nTraceback...\nValueError: boom")]
    runs += [make_run("sac", 1, [(1000 * i, 5.0 * i, 100.0 * i) for i in range(1, 11)], env="HalfCheetah-v5",
                      wall=60.0),
             make_run("sac_sb3", 1, [(1000 * i, 20.0 * i, 80.0 * i) for i in range(1, 11)], env="HalfCheetah-v5",
                      wall=240.0)]
    return runs


# ----------------------------------------------------------------------------------------------
# Metrics
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
    assert ba.solve_index([1e9] * 200, None, 100) is None              # no threshold (HalfCheetah)


def test_rolling_mean_matches_a_plain_loop():
    r = np.random.default_rng(0).normal(size=57)
    expect = [np.mean(r[max(0, i - 9):i + 1]) for i in range(len(r))]
    np.testing.assert_allclose(ba.rolling_mean(r, 10), expect)


def test_stay_fraction_counts_the_running_means_after_the_first_crossing():
    r = [0.0] * 2 + [10.0] * 4 + [0.0] * 4      # window 2, threshold 10: crossing at index 3 (means 5, 10, ...)
    first = ba.solve_index(r, 10.0, 2)
    assert first == 3
    # running means from index 3: [10, 10, 10, 5, 0, 0, 0] -> 3 of 7 stay at or above 10
    assert ba.stay_fraction(r, 10.0, 2, first) == pytest.approx(3 / 7)
    assert ba.stay_fraction(r, 10.0, 2, None) is None


def test_summarize_run_metrics():
    run = make_run("actor_critic", 1, cartpole_episodes(250, 300), evals=[500.0, 480.0])
    assert run["solved"] and run["solve_episode"] == 244
    assert run["solve_step"] == 244 * 200
    assert run["solve_s"] == pytest.approx(1.5 + 244 * 0.01)
    assert run["stay"] == 1.0 and run["final_mean"] == 500.0 and run["eval_mean"] == 490.0
    assert run["steps"] == 300 * 200 and run["sps"] == pytest.approx(60000 / (1.5 + 3.0))
    assert run["updates_per_s"] is None
    dipped = make_run("actor_critic", 2, cartpole_episodes(250, 300, dip_at=270))
    assert 0 < dipped["stay"] < 1 and dipped["final_mean"] == pytest.approx((70 * 500) / 100)
    sac = make_run("sac", 1, [((i + 1) * 200, 2.0 * (i + 1), -150.0) for i in range(10)], updates=1000)
    assert sac["solved"] and sac["solve_step"] == 2000 and sac["updates_per_s"] == pytest.approx(1000 / 20.0)
    empty = make_run("sac", 3, [], status="failed")
    assert not empty["solved"] and empty["steps"] is None and empty["sps"] is None and empty["stay"] is None


# ----------------------------------------------------------------------------------------------
# Aggregation and the table
# ----------------------------------------------------------------------------------------------
def test_aggregate_counts_unsolved_runs_as_infinity():
    agg = ba.aggregate(synthetic_runs())
    assert list(agg) == [("CartPole-v1", "actor_critic"), ("CartPole-v1", "a2c_sb3"), ("Pendulum-v1", "sac"),
                         ("Pendulum-v1", "sac_sb3"), ("HalfCheetah-v5", "sac"), ("HalfCheetah-v5", "sac_sb3")]
    ac, a2c = agg[("CartPole-v1", "actor_critic")], agg[("CartPole-v1", "a2c_sb3")]
    assert (ac["n"], ac["n_solved"], ac["n_failed"]) == (3, 3, 0)
    assert ac["steps"] == (214 * 200.0, 204 * 200.0, 224 * 200.0)   # solved at episode n - 6
    assert ac["eval"] == (500.0, 500.0, 500.0)
    assert (a2c["n_solved"], a2c["steps"][0], a2c["steps"][2]) == (2, 494 * 200.0, math.inf)
    sac_sb3 = agg[("Pendulum-v1", "sac_sb3")]
    assert sac_sb3["n_failed"] == 1 and sac_sb3["seconds"][0] == math.inf   # 1 of 2: median inf
    assert agg[("Pendulum-v1", "sac")]["updates_per_s"] == pytest.approx(np.median([3000 / 22.0, 3400 / 24.0]))


def test_markdown_table_rows_ratios_and_unsolved_cells():
    table = ba.markdown_table(ba.aggregate(synthetic_runs()))
    lines = table.splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 14
    row = {(line.split("|")[1].strip(), line.split("|")[2].strip()): [c.strip() for c in line.split("|")[1:-1]]
           for line in lines[2:]}
    ac, a2c = row[("CartPole-v1 (≥ 475)", "actor_critic.py")], row[("CartPole-v1 (≥ 475)", "SB3 A2C (rl-zoo)")]
    sac, sac_sb3 = row[("Pendulum-v1 (≥ -200)", "sac.py")], row[("Pendulum-v1 (≥ -200)", "SB3 SAC (rl-zoo)")]
    assert ac[2] == "3/3" and ac[3] == "43k (41k–45k)" and ac[5] == "100% (100%)" and ac[7] == "500"
    assert ac[8] == f"{214 / 494:.2f}×"                      # ours/SB3 of the step medians
    assert a2c[2] == "2/3" and a2c[3] == "99k (79k–never)" and a2c[8] == "(anchor)"
    assert sac_sb3[2] == "1/2 (1 failed)" and sac_sb3[3] == "— (6.0k–never)"
    assert sac[8] == "n/a" and sac[12] != "—"                                 # anchor median unreached
    cheetah = row[("HalfCheetah-v5", "sac.py")]
    assert cheetah[2] == "—/1" and cheetah[3] == "—" and cheetah[6] == "550" and cheetah[9] == "0.25×"
    assert not any("a3c.py" in k[1] for k in row)                             # only algorithms that ran


def test_baseline_rows_and_table():
    runs = synthetic_runs() + [make_run("actor_critic@base", s, cartpole_episodes(300, 300)) for s in (1, 2, 3)]
    agg = ba.aggregate(runs)
    assert list(agg)[:2] == [("CartPole-v1", "actor_critic"), ("CartPole-v1", "actor_critic@base")]
    text = ba.baseline_table(agg)
    assert "actor_critic.py" in text and f"{214 / 294:.2f}×" in text
    assert "[baseline]" in ba.markdown_table(agg)
    assert ba.baseline_table(ba.aggregate(synthetic_runs())) == ""


def test_formatting():
    assert (ba.fmt_steps(4600), ba.fmt_steps(140000), ba.fmt_steps(1.5e6), ba.fmt_steps(math.inf)) == \
        ("4.6k", "140k", "1.50M", "—")
    assert (ba.fmt_seconds(17.73), ba.fmt_seconds(612.4), ba.fmt_rate(7900), ba.fmt_rate(75.2)) == \
        ("17.7 s", "612 s", "7.9k", "75")
    assert (ba.fmt_return(-153.4), ba.fmt_return(4.25), ba.fmt_frac(0.955), ba.fmt_frac(None)) == \
        ("-153", "4.2", "96%", "—")


def test_json_round_trip_and_markdown(tmp_path):
    runs = synthetic_runs()
    meta = dict(command="python benchmarks/run.py --suite --quick", plan=[["sac", "Pendulum-v1", 1000, 1]])
    path = ba.write_json(str(tmp_path / "runs.json"), meta, runs)
    with open(path) as f:
        json.load(f)                                                   # valid JSON
    meta2, runs2 = ba.load_json(path)
    assert meta2 == meta and len(runs2) == len(runs)
    assert [r["solve_step"] for r in runs2] == [r["solve_step"] for r in runs]
    assert [r["eval_mean"] for r in runs2] == [r["eval_mean"] for r in runs]
    text = ba.write_markdown(str(tmp_path / "results.md"), meta2, runs2, png_name=None)
    assert ba.markdown_table(ba.aggregate(runs)) in text
    assert "sac_sb3 Pendulum-v1 seed 2: failed" in text and "ValueError: boom" in text
    assert "![learning curves]" not in text and "whole budget" in text


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


def test_curve_on_grid_is_nan_outside_the_run():
    eps = [(10, 1.0, 0.0), (20, 2.0, 10.0)]
    out = ba.curve_on_grid(eps, window=10, grid=np.array([0.0, 10.0, 15.0, 20.0, 100.0]))
    assert np.isnan(out[0]) and list(out[1:4]) == [0.0, 0.0, 5.0] and np.isnan(out[4])   # not held flat
    out = ba.curve_on_grid(eps, window=10, grid=np.array([0.5, 1.5, 2.0]), x="seconds")
    assert np.isnan(out[0]) and list(out[1:]) == [0.0, 5.0]


def test_plot_writes_a_small_png(tmp_path):
    pytest.importorskip("matplotlib")                # the plot only; everything above runs without it
    path = ba.plot_curves(synthetic_runs(), str(tmp_path / "curves.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) < 400_000


def test_table_code_imports_without_matplotlib_and_sb3():
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['stable_baselines3'] = None; "
            f"sys.path.insert(0, {BENCH!r}); import bench_analysis, run; "
            "print(bench_analysis.markdown_table({}).count('|'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "28", proc.stderr


# ----------------------------------------------------------------------------------------------
# run.py: the plan, job order and failure handling (with stand-in commands, no training)
# ----------------------------------------------------------------------------------------------
def test_make_jobs_interleaves_ours_and_sb3_and_trains_whole_budgets(tmp_path):
    plan = [("actor_critic", "Acrobot-v1", 300_000, 2), ("a3c", "Acrobot-v1", 300_000, 2),
            ("a2c_sb3", "Acrobot-v1", 300_000, 2), ("sac", "Pendulum-v1", 20_000, 1), ("sac_sb3", "Pendulum-v1", 20_000, 1)]
    jobs = bench_run.make_jobs(plan, str(tmp_path), keep_training=True, jobs=2)
    assert [(j["algo"], j["seed"]) for j in jobs] == [
        ("actor_critic", 1), ("a3c", 1), ("a2c_sb3", 1), ("sac", 1), ("sac_sb3", 1),
        ("a2c_sb3", 2), ("actor_critic", 2), ("a3c", 2)]                  # even seeds start with SB3's
    a3c = next(j for j in jobs if j["algo"] == "a3c")
    cmd = a3c["cmd"]
    assert a3c["cost"] == 2 and cmd[cmd.index("--num-workers") + 1] == "2" and "--keep-training" in cmd
    assert cmd[cmd.index("--env-id") + 1] == "Acrobot-v1" and cmd[cmd.index("--target-return") + 1] == "-100"
    assert a3c["evaluate"]
    sb3 = next(j for j in jobs if j["algo"] == "sac_sb3")
    assert sb3["cmd"][1].endswith("sb3_anchor.py") and sb3["cost"] == 1 and not sb3["evaluate"]
    assert sb3["cmd"][sb3["cmd"].index("--eval-episodes") + 1] == "20"
    speed = bench_run.make_jobs(plan[:1], str(tmp_path), keep_training=False)
    assert "--keep-training" not in speed[0]["cmd"] and not speed[0]["evaluate"]


def test_parse_args_plans_the_suite_quick_mode_filters_and_baseline(tmp_path):
    full = bench_run.parse_args(["--suite"])
    assert ("sac", "HalfCheetah-v5", 100_000, 3) in full.plan and ("a3c", "LunarLander-v3", 1_000_000, 5) in full.plan
    assert full.out.endswith("results")
    quick = bench_run.parse_args(["--suite", "--quick", "--envs", "Acrobot-v1", "--algos", "actor_critic,a2c_sb3"])
    assert quick.plan == [("actor_critic", "Acrobot-v1", 15_000, 1), ("a2c_sb3", "Acrobot-v1", 15_000, 1)]
    assert quick.out.endswith(os.path.join("out", "quick"))
    speed = bench_run.parse_args([])
    assert {e for _, e, _, _ in speed.plan} == {"CartPole-v1", "Pendulum-v1"}
    (tmp_path / "actor_critic.py").write_text("")
    based = bench_run.parse_args(["--algos", "actor_critic,a2c_sb3", "--baseline", str(tmp_path)])
    assert [a for a, *_ in based.plan] == ["actor_critic", "actor_critic@base", "a2c_sb3"]
    job = bench_run.make_job("actor_critic@base", "CartPole-v1", 1, 1000, str(tmp_path), False, str(tmp_path))
    assert job["script"] == str(tmp_path / "actor_critic.py")
    for bad in (["--algos", "ppo"], ["--envs", "Pong-v5"], ["--baseline", "/no/such/dir"]):
        with pytest.raises(SystemExit):
            bench_run.parse_args(bad)


def test_run_jobs_records_missing_and_failing_scripts(tmp_path):
    base = dict(env_id="CartPole-v1", budget=100, cost=1, evaluate=False)
    jobs = [dict(base, algo="actor_critic", seed=1, script=str(tmp_path / "nope.py"),
                 cmd=[sys.executable, str(tmp_path / "nope.py")], run_dir=str(tmp_path / "a")),
            dict(base, algo="actor_critic", seed=2, script=sys.executable, run_dir=str(tmp_path / "b"),
                 cmd=[sys.executable, "-c", "import sys; print('hello'); sys.exit('boom: no such option')"])]
    runs = bench_run.run_jobs(jobs, slots=2, timeout=60, log=lambda s: None)
    by_seed = {r["seed"]: r for r in runs}
    assert by_seed[1]["status"] == "missing" and "nope.py not found" in by_seed[1]["error"]
    assert by_seed[2]["status"] == "failed" and by_seed[2]["returncode"] == 1
    assert "boom: no such option" in by_seed[2]["error"] and not by_seed[2]["solved"]
    assert "0/2 (2 failed)" in ba.markdown_table(ba.aggregate(runs))


def test_a_trained_run_is_then_evaluated(tmp_path):
    """A stand-in 'script' writes a run folder, then answers --load with evaluation lines."""
    script = tmp_path / "fake.py"
    script.write_text("import os, sys\nif '--load' in sys.argv:\n    print('eval episode 1: return 7.5')\n"
                      "    print('eval episode 2: return 8.5')\nelse:\n"
                      "    os.makedirs(os.path.join(sys.argv[2], 'run1'))\n")
    job = dict(algo="actor_critic", env_id="CartPole-v1", seed=1, budget=100, cost=1, evaluate=True,
               script=str(script), run_dir=str(tmp_path / "r"),
               cmd=[sys.executable, str(script), "--logdir", str(tmp_path / "r" / "runs")])
    (run,) = bench_run.run_jobs([job], slots=1, timeout=60, log=lambda s: None)
    assert run["status"] == "ok" and run["eval_returns"] == [7.5, 8.5] and run["eval_mean"] == 8.0


def _fake_job(tmp_path, algo="actor_critic", seed=1):
    """A stand-in 'script' that makes a run folder and counts how often it ran."""
    script = tmp_path / "fake.py"
    if not script.exists():
        script.write_text("import os, sys\nos.makedirs(os.path.join(sys.argv[2], 'run1'))\n"
                          "open(os.path.join(os.path.dirname(sys.argv[2]), 'count'), 'a').write('x')\n")
    run_dir = tmp_path / "work" / algo / f"seed{seed}"
    return dict(algo=algo, env_id="CartPole-v1", seed=seed, budget=100, cost=1, evaluate=False,
                script=str(script), run_dir=str(run_dir), cmd=[sys.executable, str(script), "--logdir",
                                                                 str(run_dir / "runs"), "--seed", str(seed)])


def test_resume_keeps_the_records_of_the_same_command_and_code(tmp_path):
    records, meta = str(tmp_path / "records"), dict(batch="b1", machine="m", versions="v", commit="c")
    job = _fake_job(tmp_path)
    (first,) = bench_run.run_jobs([job], slots=1, timeout=60, log=lambda s: None, records=records, meta=meta)
    path = bench_run.record_path(records, job)
    saved = json.load(open(path))
    assert saved["spec"].endswith("--logdir RUN_DIR/runs --seed 1") and saved["batch"] == "b1"
    assert saved["key"] == bench_run.code_key(job) and saved["machine"] == "m"
    count = tmp_path / "work" / "actor_critic" / "seed1" / "count"
    # Another machine, another work folder: the record is still this command's and this code's.
    moved = dict(job, run_dir=str(tmp_path / "elsewhere"), cmd=[w.replace(job["run_dir"], str(tmp_path / "elsewhere"))
                                                               for w in job["cmd"]])
    assert bench_run.read_record(records, moved)[1] == "fresh"
    (kept,) = bench_run.run_jobs([moved], slots=1, timeout=60, log=lambda s: None, resume=True, records=records)
    assert kept["status"] == "ok" and kept["wall_s"] == first["wall_s"] and count.read_text() == "x"  # not rerun
    bench_run.run_jobs([dict(job, cmd=job["cmd"] + ["--gamma", "0.9"])], slots=1, timeout=60, log=lambda s: None,
                       resume=True, records=records, meta=meta)
    assert count.read_text() == "xx"                              # another command: run again
    (tmp_path / "common.py").write_text("# changed\n")           # the code changed: the record is stale
    assert bench_run.read_record(records, job)[1] == "stale"
    bench_run.run_jobs([job], slots=1, timeout=60, log=lambda s: None, resume=True, records=records, meta=meta)
    assert count.read_text() == "xxx" and bench_run.read_record(records, job)[1] == "fresh"


def test_sb3_records_stay_valid_until_sb3_or_its_settings_change(tmp_path, monkeypatch):
    job = _fake_job(tmp_path, algo="a2c_sb3")
    key = bench_run.code_key(job)
    assert key["settings"] == {"n_envs": "8", "ent_coef": "0.0"} and "stable-baselines3" in key
    (tmp_path / "common.py").write_text("# our code changed\n")
    assert bench_run.code_key(job) == key
    import sb3_anchor
    monkeypatch.setitem(sb3_anchor.ZOO, ("a2c_sb3", "CartPole-v1"), dict(n_envs=16, ent_coef=0.0))
    assert bench_run.code_key(job) != key
    monkeypatch.setattr(bench_run, "_version", lambda pkg: "0.0.1")
    assert bench_run.code_key(_fake_job(tmp_path, algo="a2c_sb3"))["stable-baselines3"] == "0.0.1"


def test_report_reads_the_fresh_records_alone(tmp_path):
    records, out, work = tmp_path / "records", tmp_path / "out", tmp_path / "work"
    argv = ["--suite", "--report", "--envs", "CartPole-v1", "--algos", "actor_critic,a2c_sb3", "--seeds", "2",
            "--records", str(records), "--out", str(out), "--workdir", str(work)]
    plan = [(a, e, b, 2 if a == "actor_critic" else 1) for a, e, b, _ in bench_run.parse_args(argv).plan]
    jobs = bench_run.make_jobs(plan, str(tmp_path / "elsewhere"), keep_training=True)   # another machine's folder
    for job, eps in zip(jobs, (cartpole_episodes(200, 300), cartpole_episodes(400, 400), cartpole_episodes(300, 300))):
        run = make_run(job["algo"], job["seed"], eps)
        bench_run.write_record(str(records), job, run, dict(batch="b1"))
    stale = next(j for j in jobs if j["algo"] == "actor_critic" and j["seed"] == 2)
    rec = json.loads(open(bench_run.record_path(str(records), stale)).read())
    rec["key"] = {"sha256": "an old script"}
    open(bench_run.record_path(str(records), stale), "w").write(json.dumps(rec))
    assert bench_run.main(argv) == 0
    md = (out / "results.md").read_text()
    assert "2 of 4 runs have a record of this code (1 stale" in md
    row = next(line for line in md.splitlines() if line.startswith("| CartPole-v1 (≥ 475) | actor_critic.py"))
    assert "| 1/1 |" in row and "0.49×" in row                     # env steps: 194 episodes x 200 / 394 x 200


def test_seconds_ratio_only_between_runs_that_shared_the_machine():
    ours = [dict(make_run("actor_critic", s, cartpole_episodes(200, 200)), batch="b2") for s in (1, 2)]
    sb3 = [dict(make_run("a2c_sb3", s, cartpole_episodes(400, 400)), batch="b1") for s in (1, 2)]
    row = next(line for line in ba.markdown_table(ba.aggregate(ours + sb3)).splitlines() if "actor_critic.py" in line)
    assert "| apart |" in row and "0.49×" in row                   # steps still compare, seconds do not
    sb3 = [dict(r, batch="b2") for r in sb3]
    row = next(line for line in ba.markdown_table(ba.aggregate(ours + sb3)).splitlines() if "actor_critic.py" in line)
    assert "| apart |" not in row and "| 0.49× | 0.63× |" in row


def test_command_text():
    assert bench_run.command_text([sys.executable, os.path.join(ROOT, "sac.py"), "--seed", "1"]) == \
        "python sac.py --seed 1"


def test_run_jobs_kills_a_run_past_its_timeout(tmp_path):
    job = dict(algo="sac_sb3", env_id="Pendulum-v1", seed=1, budget=100, cost=1, script=sys.executable,
               evaluate=False, run_dir=str(tmp_path / "c"), cmd=[sys.executable, "-c", "import time; time.sleep(60)"])
    os.makedirs(job["run_dir"])
    (tmp_path / "c" / "episodes.csv").write_text("step,time,seconds,return,length\n")
    (run,) = bench_run.run_jobs([job], slots=1, timeout=0.5, log=lambda s: None)
    assert run["status"] == "timeout" and run["wall_s"] < 20 and run["episodes"] == []
