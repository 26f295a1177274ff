"""Learning curves -> "solved?" / steps and seconds to solve -> markdown table, JSON and PNG.

Imports only the standard library and NumPy at module level, so that the table and solve-detection code
(and its tests) work without stable-baselines3 or matplotlib; the TensorBoard reader imports tensorboard
and the plot imports matplotlib when called.

A run's learning curve is a list of episodes ``(env_step, wall_s, return)`` in the order the run recorded
them: ``env_step`` is the env step at which the episode ended, ``wall_s`` the wall-clock seconds since the
run's *process start* (measured by run.py just before it starts the subprocess, so Python and torch import
time count, for our scripts and for Stable-Baselines3 alike).
"""
import json
import math
import os

import numpy as np

# "Solved": the mean of the last `window` episode returns reaches `target` (the scripts' own rule).
SOLVE_RULES = {"CartPole-v1": (475.0, 100), "Pendulum-v1": (-200.0, 10)}

# Each algorithm: the env it is benchmarked on, and whether it is ours or a Stable-Baselines3 anchor.
ALGOS = {
    "actor_critic": dict(env="CartPole-v1", label="actor_critic.py", anchor="a2c_sb3"),
    "a3c": dict(env="CartPole-v1", label="a3c.py (2 workers)", anchor="a2c_sb3"),
    "a2c_sb3": dict(env="CartPole-v1", label="SB3 A2C (rl-zoo)", anchor=None),
    "sac": dict(env="Pendulum-v1", label="sac.py", anchor="sac_sb3"),
    "sac_sb3": dict(env="Pendulum-v1", label="SB3 SAC (rl-zoo)", anchor=None),
}
ALGO_ORDER = ["actor_critic", "a3c", "a2c_sb3", "sac", "sac_sb3"]


# ----------------------------------------------------------------------------------------------
# Solve detection and per-run summary
# ----------------------------------------------------------------------------------------------
def solve_index(returns, target, window):
    """Index of the first episode at which the mean of the last ``window`` returns is >= ``target``
    (only once ``window`` episodes exist), or None if that never happens."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < window:
        return None
    c = np.concatenate([[0.0], np.cumsum(r)])
    means = (c[window:] - c[:-window]) / window          # means[k] = mean(r[k : k + window])
    hits = np.flatnonzero(means >= target - 1e-9 * max(1.0, abs(target)))
    return int(hits[0]) + window - 1 if len(hits) else None


def rolling_mean(returns, window):
    """Mean of the last ``window`` returns at each episode (of all so far while fewer exist)."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) == 0:
        return r
    c = np.concatenate([[0.0], np.cumsum(r)])
    idx = np.arange(1, len(r) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def summarize_run(run):
    """Fill in the derived fields of a run record from its ``episodes`` (in place; returns it).

    solved, solve_step, solve_s: the first episode where the solve rule holds (None if never);
    steps, last_s: env step and wall seconds of the last recorded episode;
    sps: steps / last_s (env steps per wall second since process start, imports included);
    updates_per_s: run["updates"] / last_s where the run reports its gradient updates.
    """
    target, window = SOLVE_RULES[run["env_id"]]
    eps = run.get("episodes") or []
    run["target"], run["window"] = target, window
    run["num_episodes"] = len(eps)
    i = solve_index([e[2] for e in eps], target, window)
    run["solved"] = i is not None
    run["solve_step"] = int(eps[i][0]) if i is not None else None
    run["solve_s"] = float(eps[i][1]) if i is not None else None
    run["solve_episode"] = i + 1 if i is not None else None
    if eps:
        run["steps"], run["last_s"] = int(eps[-1][0]), float(eps[-1][1])
        run["sps"] = run["steps"] / run["last_s"] if run["last_s"] > 0 else None
        run["final_mean_return"] = float(np.mean([e[2] for e in eps[-window:]]))
    else:
        run["steps"] = run["last_s"] = run["sps"] = run["final_mean_return"] = None
    upd = run.get("updates")
    run["updates_per_s"] = upd / run["last_s"] if upd is not None and run.get("last_s") else None
    return run


# ----------------------------------------------------------------------------------------------
# Aggregation over seeds and the markdown table
# ----------------------------------------------------------------------------------------------
def _median_spread(values):
    """Median, min, max where unsolved runs count as +inf (so a median of inf: fewer than half solved)."""
    if not values:
        return None
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)), float(v.min()), float(v.max())


def aggregate(runs):
    """Per algorithm: counts, median/min/max of steps and seconds to solve (unsolved = inf), throughput."""
    out = {}
    for algo in [a for a in ALGO_ORDER if any(r["algo"] == a for r in runs)] + \
            sorted({r["algo"] for r in runs} - set(ALGO_ORDER)):
        rs = [r for r in runs if r["algo"] == algo]
        solved = [r for r in rs if r.get("solved")]
        sps = [r["sps"] for r in rs if r.get("sps")]
        ups = [r["updates_per_s"] for r in rs if r.get("updates_per_s")]
        out[algo] = dict(
            algo=algo, env_id=rs[0]["env_id"], n=len(rs), n_solved=len(solved),
            n_failed=sum(r.get("status") != "ok" for r in rs),
            steps=_median_spread([r["solve_step"] if r.get("solved") else math.inf for r in rs]),
            seconds=_median_spread([r["solve_s"] if r.get("solved") else math.inf for r in rs]),
            sps=float(np.median(sps)) if sps else None,
            updates_per_s=float(np.median(ups)) if ups else None,
        )
    return out


def fmt_steps(x):
    if x is None or not math.isfinite(x):
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_seconds(x):
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.1f} s" if x < 100 else f"{x:.0f} s"


def fmt_rate(x):
    if not x:
        return "—"
    return f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def _cell(stat, fmt):
    """'median (min–max)'; inf (an unsolved run) prints as 'unsolved', an unreached median as '—'."""
    if stat is None:
        return "—"
    med, lo, hi = stat
    if not math.isfinite(med):
        return "not solved" if not math.isfinite(lo) else f"— ({fmt(lo)}–unsolved)"
    hi_s = fmt(hi) if math.isfinite(hi) else "unsolved"
    return f"{fmt(med)} ({fmt(lo)}–{hi_s})"


def _ratio(a, b):
    if a is None or b is None:
        return "—"
    if not (math.isfinite(a[0]) and math.isfinite(b[0])) or b[0] <= 0:
        return "n/a"
    return f"{a[0] / b[0]:.2f}×"


def markdown_table(agg):
    """One row per algorithm, grouped by env; the ratio columns compare each of ours with its SB3 anchor."""
    head = ("| env | algorithm | solved | env steps to solve: median (min–max) | seconds to solve: median (min–max) "
            "| ours/SB3 steps | ours/SB3 seconds | env steps/s | gradient updates/s |")
    lines = [head, "|" + "---|" * 9]
    envs = []
    for a in agg.values():
        if a["env_id"] not in envs:
            envs.append(a["env_id"])
    for env in envs:
        for algo, a in agg.items():
            if a["env_id"] != env:
                continue
            info = ALGOS.get(algo, dict(label=algo, anchor=None))
            anchor = agg.get(info["anchor"]) if info["anchor"] else None
            solved = f"{a['n_solved']}/{a['n']}" + (f" ({a['n_failed']} failed)" if a["n_failed"] else "")
            is_anchor = info["anchor"] is None and algo in ALGOS
            lines.append("| " + " | ".join([
                env, info["label"], solved, _cell(a["steps"], fmt_steps), _cell(a["seconds"], fmt_seconds),
                "(anchor)" if is_anchor else _ratio(a["steps"], anchor and anchor["steps"]),
                "(anchor)" if is_anchor else _ratio(a["seconds"], anchor and anchor["seconds"]),
                fmt_rate(a["sps"]), fmt_rate(a["updates_per_s"]),
            ]) + " |")
    return "\n".join(lines)


NOTES = """\
How to read it: a run is *solved* at the first episode where the mean of the last {windows} episode
returns reaches the target ({targets}); every run, ours and SB3's, stops there or at its env-step
budget. Steps and seconds to solve are those of the episode that completes the solve rule, read from
the learning curve (the same rule for every run; our scripts' own "solved after" line can be a rollout
later). Medians and ranges are over all seeds, an unsolved run counting as +infinity: a median "—"
means the solved runs are not a majority, a maximum "unsolved" that at least one run did not solve.
The ratio columns are our median divided by the SB3 anchor's (below 1: ours needs fewer steps or less
time). Wall seconds run from the start of each process (run.py's clock just before it launches the
subprocess), so Python, torch and SB3 import times count for both. Env steps/s = the last episode's env
step / its wall seconds; gradient updates/s = gradient updates / the same seconds (SB3 SAC:
`model._n_updates`, 1 per env step after learning_starts=100; sac.py: the count it prints at the end).
All runs: CPU, one torch thread per process, at most one process per core at a time (a3c's 2 workers
take both), ours and SB3's interleaved seed by seed."""


def notes_text():
    envs = list(SOLVE_RULES)
    return NOTES.format(windows="/".join(str(SOLVE_RULES[e][1]) for e in envs),
                        targets=", ".join(f"{e}: {SOLVE_RULES[e][0]:g}" for e in envs))


def failed_runs_text(runs):
    bad = [r for r in runs if r.get("status") != "ok"]
    if not bad:
        return ""
    out = ["", "Failed runs:", ""]
    for r in bad:
        tail = (r.get("error") or "").strip().splitlines()[-3:]
        out.append(f"- {r['algo']} seed {r['seed']}: {r.get('status')}" +
                   (": " + " / ".join(t.strip() for t in tail) if tail else ""))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Learning curves: reading them, and the plot
# ----------------------------------------------------------------------------------------------
def read_tensorboard_curve(run_dir, t0, tag="charts/episodic_return"):
    """Episodes ``[(step, wall_s since t0, return)]`` of ``tag`` from a run folder, in the order written."""
    from tensorboard.backend.event_processing import event_accumulator
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0},
                                            purge_orphaned_data=False)
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    return [(int(e.step), float(e.wall_time - t0), float(e.value)) for e in acc.Scalars(tag)]


def read_csv_curve(path, t0):
    """Episodes from sb3_anchor.py's CSV (columns step, time = epoch seconds, return, ...; by header name)."""
    eps = []
    if not os.path.exists(path):
        return eps
    with open(path) as f:
        header = next(f, "").strip().split(",")
        try:
            i_step, i_time, i_ret = header.index("step"), header.index("time"), header.index("return")
        except ValueError:
            return eps
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == len(header):
                try:
                    eps.append((int(parts[i_step]), float(parts[i_time]) - t0, float(parts[i_ret])))
                except ValueError:
                    pass  # a half-written last line of a killed run
    return eps


def curve_on_grid(episodes, window, grid, x="steps"):
    """A run's rolling-mean return sampled at ``grid`` (x = env steps or wall seconds): NaN before its first
    episode, held at its last value after its last episode (runs stop when solved)."""
    if not episodes:
        return np.full(len(grid), np.nan)
    xs = np.array([e[0] if x == "steps" else e[1] for e in episodes], dtype=np.float64)
    ys = rolling_mean([e[2] for e in episodes], window)
    xs = np.maximum.accumulate(xs)  # a3c's workers may report slightly out-of-order steps
    idx = np.searchsorted(xs, grid, side="right") - 1
    out = ys[np.clip(idx, 0, None)]
    out[idx < 0] = np.nan
    return out


def plot_curves(runs, path, dpi=72):
    """Median and min–max band across seeds of each algorithm's rolling-mean return; one row per env,
    x = env steps (left) and x = wall seconds since process start (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    envs = [e for e in SOLVE_RULES if any(r["env_id"] == e for r in runs)]
    envs += sorted({r["env_id"] for r in runs} - set(envs))
    fig, axes = plt.subplots(len(envs), 2, figsize=(11, 3.6 * len(envs)), squeeze=False)
    colors = {"actor_critic": "tab:blue", "a3c": "tab:green", "a2c_sb3": "tab:gray",
              "sac": "tab:red", "sac_sb3": "tab:gray"}
    for row, env in zip(axes, envs):
        target, window = SOLVE_RULES.get(env, (None, 100))
        env_runs = [r for r in runs if r["env_id"] == env and r.get("episodes")]
        algos = [a for a in ALGO_ORDER if any(r["algo"] == a for r in env_runs)]
        algos += sorted({r["algo"] for r in env_runs} - set(algos))
        for ax, x in zip(row, ("steps", "seconds")):
            col = 0 if x == "steps" else 1
            xmax = max((max(e[col] for e in r["episodes"]) for r in env_runs), default=1.0)
            grid = np.linspace(0, xmax, 300)
            for algo in algos:
                rs = [r for r in env_runs if r["algo"] == algo]
                curves = np.array([curve_on_grid(r["episodes"], window, grid, x) for r in rs])
                with np.errstate(all="ignore"), _quiet():
                    med = np.nanmedian(curves, axis=0)
                    lo, hi = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
                info = ALGOS.get(algo, dict(label=algo, anchor=None))
                c = colors.get(algo)
                ls = "--" if algo.endswith("_sb3") else "-"
                n_solved = sum(bool(r.get("solved")) for r in rs)
                ax.plot(grid, med, ls, color=c, lw=1.6, label=f"{info['label']} ({n_solved}/{len(rs)} solved)")
                ax.fill_between(grid, lo, hi, color=c, alpha=0.15, lw=0)
            if target is not None:
                ax.axhline(target, color="k", lw=0.8, ls=":")
            ax.set_xlabel("env steps" if x == "steps" else "wall seconds since process start")
            ax.set_ylabel(f"mean return (last {window} episodes)")
            ax.set_title(f"{env}: x = {'env steps' if x == 'steps' else 'wall seconds'}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
            if x == "steps":
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt_steps(v) if v else "0"))
    fig.suptitle("median (line) and min–max (band) over seeds; dotted: solve target", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


class _quiet:
    """Silence NumPy's 'All-NaN slice' RuntimeWarning (expected before a run's first episode)."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


# ----------------------------------------------------------------------------------------------
# Writing the results
# ----------------------------------------------------------------------------------------------
def _round_episodes(eps):
    return [[int(s), round(float(t), 3), round(float(r), 3)] for s, t, r in eps]


def write_json(path, meta, runs):
    """All runs, one compact line each (episodes as [step, wall_s, return]), so the file stays small."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write('{"meta": ' + json.dumps(meta, indent=1) + ',\n "runs": [\n')
        for i, r in enumerate(runs):
            r = dict(r, episodes=_round_episodes(r.get("episodes") or []))
            f.write("  " + json.dumps(r, separators=(",", ":")) + (",\n" if i < len(runs) - 1 else "\n"))
        f.write(" ]\n}\n")
    os.replace(tmp, path)
    return path


def load_json(path):
    with open(path) as f:
        data = json.load(f)
    runs = [summarize_run(r) for r in data["runs"]]
    return data.get("meta", {}), runs


def write_markdown(path, meta, runs, png_name=None):
    agg = aggregate(runs)
    parts = ["# Learning speed: ours vs Stable-Baselines3", ""]
    if meta:
        parts += [f"Command: `{meta.get('command', '')}`  ", f"Date: {meta.get('date', '')}  ",
                  f"Machine: {meta.get('machine', '')}  ", f"Versions: {meta.get('versions', '')}  ",
                  f"Commit: {meta.get('commit') or 'unknown'}; total time {meta.get('total_s', '?')} s"
                  + ("; INTERRUPTED (partial results)" if meta.get("interrupted") else "") + "  ",
                  f"Seeds: {meta.get('seeds', '')}; budgets (env steps): " +
                  ", ".join(f"{a} {fmt_steps(b)}" for a, b in (meta.get("budgets") or {}).items()), ""]
    parts += [markdown_table(agg), "", notes_text()]
    if png_name:
        parts += ["", f"![learning curves]({png_name})"]
    fail = failed_runs_text(runs)
    if fail:
        parts.append(fail)
    text = "\n".join(parts) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text
