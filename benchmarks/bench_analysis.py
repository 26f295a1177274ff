"""Learning curves -> per-run metrics -> markdown tables, JSON and PNG.

Imports only the standard library and NumPy at module level, so that the table code (and its tests) works
without stable-baselines3 or matplotlib; the TensorBoard reader imports tensorboard and the plot imports
matplotlib when called.

A run's learning curve is a list of episodes ``(env_step, wall_s, return)`` in the order the run recorded
them: ``env_step`` is the env step at which the episode ended, ``wall_s`` the wall-clock seconds since the
run's *process start* (measured by run.py just before it starts the subprocess, so Python and torch import
time count, for our scripts and for Stable-Baselines3 alike).
"""
import json
import math
import os

import numpy as np

# Per env: the threshold and the window of the running mean that must reach it (None: no threshold, the final
# return is what counts). The scripts' own "solved" rule; CartPole and Pendulum as in the posts.
SOLVE_RULES = {"CartPole-v1": (475.0, 100), "Acrobot-v1": (-100.0, 100), "LunarLander-v3": (200.0, 100),
               "Pendulum-v1": (-200.0, 10), "InvertedPendulum-v5": (950.0, 20),
               "LunarLanderContinuous-v3": (200.0, 100), "HalfCheetah-v5": (None, 100)}
FINAL_WINDOW = 100   # the final mean return: of the last 100 episodes

# Each algorithm: its label, and the SB3 run its ratios are taken against (None: it is an anchor itself).
ALGOS = {
    "actor_critic": dict(label="actor_critic.py", anchor="a2c_sb3"),
    "a3c": dict(label="a3c.py (2 workers)", anchor="a2c_sb3"),
    "a2c_sb3": dict(label="SB3 A2C (rl-zoo)", anchor=None),
    "sac": dict(label="sac.py", anchor="sac_sb3"),
    "sac_sb3": dict(label="SB3 SAC (rl-zoo)", anchor=None),
}
ALGO_ORDER = ["actor_critic", "a3c", "a2c_sb3", "sac", "sac_sb3"]
BASELINE = "@base"   # suffix of runs of another checkout's scripts (run.py --baseline)


def label(algo):
    base = algo[:-len(BASELINE)] if algo.endswith(BASELINE) else algo
    text = ALGOS.get(base, dict(label=base))["label"]
    return text + " [baseline]" if base != algo else text


def rule(env_id):
    return SOLVE_RULES.get(env_id, (None, 100))


# ----------------------------------------------------------------------------------------------
# Per-run metrics
# ----------------------------------------------------------------------------------------------
def solve_index(returns, target, window):
    """Index of the first episode at which the mean of the last ``window`` returns is >= ``target``
    (only once ``window`` episodes exist), or None if that never happens."""
    r = np.asarray(returns, dtype=np.float64)
    if target is None or len(r) < window:
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


def stay_fraction(returns, target, window, first):
    """Of the running means from the first crossing (episode ``first``) to the end, the fraction >= target."""
    if first is None:
        return None
    means = rolling_mean(returns, window)[first:]
    return float(np.mean(means >= target - 1e-9 * max(1.0, abs(target))))


def summarize_run(run):
    """Fill in the derived fields of a run record from its ``episodes`` (in place; returns it).

    solved, solve_step, solve_s: the first episode where the running mean reaches the threshold (None if never);
    stay: the fraction of running means from there on that stay at or above it; final_mean: mean of the last
    100 returns; eval_mean: mean of the deterministic evaluation after training (if any);
    steps, last_s, sps: env step and wall seconds of the last episode, and their ratio; updates_per_s.
    """
    target, window = rule(run["env_id"])
    eps = run.get("episodes") or []
    returns = [e[2] for e in eps]
    run["target"], run["window"], run["num_episodes"] = target, window, len(eps)
    i = solve_index(returns, target, window)
    run["solved"] = i is not None
    run["solve_step"] = int(eps[i][0]) if i is not None else None
    run["solve_s"] = float(eps[i][1]) if i is not None else None
    run["solve_episode"] = i + 1 if i is not None else None
    run["stay"] = stay_fraction(returns, target, window, i)
    evals = run.get("eval_returns") or []
    run["eval_mean"] = float(np.mean(evals)) if evals else None
    if eps:
        run["steps"], run["last_s"] = int(eps[-1][0]), float(eps[-1][1])
        run["sps"] = run["steps"] / run["last_s"] if run["last_s"] > 0 else None
        run["final_mean"] = float(np.mean(returns[-FINAL_WINDOW:]))
    else:
        run["steps"] = run["last_s"] = run["sps"] = run["final_mean"] = None
    upd = run.get("updates")
    run["updates_per_s"] = upd / run["last_s"] if upd is not None and run.get("last_s") else None
    return run


# ----------------------------------------------------------------------------------------------
# Aggregation over seeds and the markdown tables
# ----------------------------------------------------------------------------------------------
def _median_spread(values):
    """Median, min, max (None if no values); unsolved runs are passed in as +inf."""
    if not values:
        return None
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)), float(v.min()), float(v.max())


def _order(runs):
    envs = [e for e in SOLVE_RULES if any(r["env_id"] == e for r in runs)]
    envs += sorted({r["env_id"] for r in runs} - set(envs))
    algos = [a for a in ALGO_ORDER if any(r["algo"] == a for r in runs)]
    for a in list(algos):
        if any(r["algo"] == a + BASELINE for r in runs):
            algos.insert(algos.index(a) + 1, a + BASELINE)
    algos += sorted({r["algo"] for r in runs} - set(algos))
    return [(e, a) for e in envs for a in algos if any(r["env_id"] == e and r["algo"] == a for r in runs)]


def aggregate(runs):
    """Per (env, algorithm): counts, medians and ranges of every metric over its seeds."""
    out = {}
    for env, algo in _order(runs):
        rs = [r for r in runs if r["algo"] == algo and r["env_id"] == env]
        values = lambda key: [r[key] for r in rs if r.get(key) is not None]  # noqa: E731
        out[(env, algo)] = dict(
            env_id=env, algo=algo, n=len(rs), n_solved=sum(bool(r.get("solved")) for r in rs),
            n_failed=sum(r.get("status") != "ok" for r in rs), has_target=rule(env)[0] is not None,
            steps=_median_spread([r["solve_step"] if r.get("solved") else math.inf for r in rs]),
            seconds=_median_spread([r["solve_s"] if r.get("solved") else math.inf for r in rs]),
            stay=_median_spread(values("stay")), final=_median_spread(values("final_mean")),
            eval=_median_spread(values("eval_mean")), wall=_median_spread(values("wall_s")),
            sps=float(np.median(values("sps"))) if values("sps") else None, batches={r.get("batch") for r in rs},
            updates_per_s=float(np.median(values("updates_per_s"))) if values("updates_per_s") else None)
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


def fmt_return(x):
    return "—" if x is None or not math.isfinite(x) else f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


def fmt_frac(x):
    return "—" if x is None else f"{100 * x:.0f}%"


def _cell(stat, fmt):
    """'median (min–max)'; inf (an unsolved run) prints as 'unsolved', an unreached median as '—'."""
    if stat is None:
        return "—"
    med, lo, hi = stat
    if not math.isfinite(med):
        return "never" if not math.isfinite(lo) else f"— ({fmt(lo)}–never)"
    if lo == hi:
        return fmt(med)
    return f"{fmt(med)} ({fmt(lo)}–{fmt(hi) if math.isfinite(hi) else 'never'})"


def _ratio(a, b):
    if a is None or b is None:
        return "—"
    if not (math.isfinite(a[0]) and math.isfinite(b[0])) or b[0] <= 0:
        return "n/a"
    return f"{a[0] / b[0]:.2f}×"


def _side_by_side(a, anchor):
    """Seconds compare only between runs that shared the machine at the same time: the same suite runs."""
    return anchor is not None and a["batches"] == anchor["batches"]


def _anchor(agg, env, algo):
    base = algo[:-len(BASELINE)] if algo.endswith(BASELINE) else algo
    info = ALGOS.get(base)
    return agg.get((env, info["anchor"])) if info and info["anchor"] else None


def markdown_table(agg):
    """One row per (env, algorithm). Reached: runs whose running mean crossed the threshold; steps and seconds
    to that first crossing; stay: the fraction of running means after it at or above the threshold (median,
    and the worst seed); final mean of the last 100 returns; deterministic evaluation of the final model."""
    head = ("| env | algorithm | reached | env steps to first crossing | seconds to first crossing | "
            "stay ≥ threshold after: median (worst) | final mean return (last 100) | deterministic eval (20 ep) | "
            "ours/SB3 steps | ours/SB3 seconds | wall s per run | env steps/s | updates/s |")
    lines = [head, "|" + "---|" * 13]
    for (env, algo), a in agg.items():
        anchor = _anchor(agg, env, algo)
        is_anchor = algo in ALGOS and ALGOS[algo]["anchor"] is None
        reached = (f"{a['n_solved']}/{a['n']}" if a["has_target"] else f"—/{a['n']}") + \
            (f" ({a['n_failed']} failed)" if a["n_failed"] else "")
        stay = "—" if a["stay"] is None else f"{fmt_frac(a['stay'][0])} ({fmt_frac(a['stay'][1])})"
        target = rule(env)[0]
        lines.append("| " + " | ".join([
            env + (f" (≥ {target:g})" if target is not None else ""), label(algo), reached,
            _cell(a["steps"], fmt_steps) if a["has_target"] else "—",
            _cell(a["seconds"], fmt_seconds) if a["has_target"] else "—", stay,
            _cell(a["final"], fmt_return), _cell(a["eval"], fmt_return),
            "(anchor)" if is_anchor else _ratio(a["steps"], anchor and anchor["steps"]) if a["has_target"] else "—",
            "(anchor)" if is_anchor else "apart" if anchor and not _side_by_side(a, anchor)
            else _ratio(a["seconds"], anchor and anchor["seconds"]) if a["has_target"]
            else _ratio(a["wall"], anchor and anchor["wall"]),
            _cell(a["wall"], fmt_seconds), fmt_rate(a["sps"]), fmt_rate(a["updates_per_s"]),
        ]) + " |")
    return "\n".join(lines)


def baseline_table(agg):
    """This code against another checkout's (run.py --baseline): medians of steps and seconds to the first
    crossing, and their ratios (below 1: this code is faster)."""
    lines = ["| env | script | env steps: this / baseline | seconds: this / baseline | ratio steps | ratio seconds |",
             "|---|---|---|---|---|---|"]
    for (env, algo), a in agg.items():
        b = agg.get((env, algo + BASELINE))
        if b is None:
            continue
        lines.append(f"| {env} | {label(algo)} | {fmt_steps(a['steps'][0])} / {fmt_steps(b['steps'][0])} | "
                     f"{fmt_seconds(a['seconds'][0])} / {fmt_seconds(b['seconds'][0])} | "
                     f"{_ratio(a['steps'], b['steps'])} | {_ratio(a['seconds'], b['seconds'])} |")
    return "\n".join(lines) if len(lines) > 2 else ""


NOTES = """\
How to read it: the *threshold* of each env is the running mean of the last N episode returns that counts as
solved ({rules}). A run *reaches* it at the first episode where that running mean gets there; steps and
seconds are those of that episode. *Stay* is the fraction of the running means from that episode to the
end of the run that are still at or above the threshold (100%: it never fell back; median over the seeds
that reached it, and the worst of them). {stop_rule} *Final mean return* is the mean of a run's last 100
episode returns; *deterministic eval* plays 20 episodes with the final model's greedy (argmax) or mean action
after training (not timed). Medians and ranges are over seeds, an unreached threshold counting as +infinity
("—": fewer than half reached it; "never": at least one did not). The ratio columns divide our median by
the SB3 anchor's on the same env (below 1: ours needs fewer steps or less time; HalfCheetah has no threshold:
the ratio of whole-run wall seconds). A seconds ratio is given only where ours and SB3's runs shared the machine
at the same time (the same suite runs, interleaved seed by seed); "apart" marks records made at different
times (their steps and returns still compare; their seconds do not). Wall seconds run from the start of each process, imports included, for
SB3 too. Env steps/s = the last episode's env step / its wall seconds; updates/s likewise (SB3:
`model._n_updates`; sac.py: the count it prints). All runs: CPU, one torch thread per process, at most one
process per core (a3c's 2 workers take both), ours and SB3's interleaved seed by seed."""


def notes_text(runs, keep_training):
    envs = [e for e, _ in _order(runs)]
    rules = ", ".join(f"{e}: {rule(e)[0]:g} over {rule(e)[1]}" for e in dict.fromkeys(envs) if rule(e)[0] is not None)
    stop = ("Every run trains its whole budget (no early stop)." if keep_training else
            "Every run stops once it reaches the threshold (or at its budget), so *stay* is not measured.")
    return NOTES.format(rules=rules, stop_rule=stop)


def failed_runs_text(runs):
    bad = [r for r in runs if r.get("status") != "ok"]
    if not bad:
        return ""
    out = ["", "Failed runs:", ""]
    for r in bad:
        tail = (r.get("error") or "").strip().splitlines()[-3:]
        out.append(f"- {r['algo']} {r['env_id']} seed {r['seed']}: {r.get('status')}" +
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
    episode and after its last one (no curve is held flat past the end of its run)."""
    if not episodes:
        return np.full(len(grid), np.nan)
    xs = np.array([e[0] if x == "steps" else e[1] for e in episodes], dtype=np.float64)
    ys = rolling_mean([e[2] for e in episodes], window)
    xs = np.maximum.accumulate(xs)  # a3c's workers may report slightly out-of-order steps
    idx = np.searchsorted(xs, grid, side="right") - 1
    out = ys[np.clip(idx, 0, None)]
    out[(idx < 0) | (grid > xs[-1])] = np.nan
    return out


def plot_curves(runs, path, dpi=72):
    """Median and min–max band across seeds of each algorithm's rolling-mean return; one row per env,
    x = env steps (left) and x = wall seconds since process start (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pairs = _order(runs)
    envs = list(dict.fromkeys(e for e, _ in pairs))
    fig, axes = plt.subplots(len(envs), 2, figsize=(11, 3.4 * len(envs)), squeeze=False)
    colors = {"actor_critic": "tab:blue", "a3c": "tab:green", "a2c_sb3": "tab:gray", "sac": "tab:red",
              "sac_sb3": "tab:gray"}
    for row, env in zip(axes, envs):
        target, window = rule(env)
        env_runs = [r for r in runs if r["env_id"] == env and r.get("episodes")]
        for ax, x in zip(row, ("steps", "seconds")):
            col = 0 if x == "steps" else 1
            xmax = max((max(e[col] for e in r["episodes"]) for r in env_runs), default=1.0)
            grid = np.linspace(0, xmax, 300)
            for e, algo in pairs:
                rs = [r for r in env_runs if r["algo"] == algo]
                if e != env or not rs:
                    continue
                curves = np.array([curve_on_grid(r["episodes"], window, grid, x) for r in rs])
                with np.errstate(all="ignore"), _quiet():
                    med, lo, hi = (np.nanmedian(curves, 0), np.nanmin(curves, 0), np.nanmax(curves, 0))
                base = algo.split("@")[0]
                c = colors.get(base)
                ls = "--" if base.endswith("_sb3") else (":" if algo.endswith(BASELINE) else "-")
                n = f"{sum(bool(r.get('solved')) for r in rs)}/{len(rs)} reached" if target is not None else \
                    f"{len(rs)} seeds"
                ax.plot(grid, med, ls, color=c, lw=1.6, label=f"{label(algo)} ({n})")
                ax.fill_between(grid, lo, hi, color=c, alpha=0.15, lw=0)
            if target is not None:
                ax.axhline(target, color="k", lw=0.8, ls=":")
            ax.set_xlabel("env steps" if x == "steps" else "wall seconds since process start")
            ax.set_ylabel(f"mean return (last {window})")
            ax.set_title(f"{env}: x = {'env steps' if x == 'steps' else 'wall seconds'}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
            if x == "steps":
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt_steps(v) if v else "0"))
    fig.suptitle("median (line) and min–max (band) over seeds, each run's whole budget; dotted: threshold",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))   # keep the first row's titles clear of it
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


class _quiet:
    """Silence NumPy's 'All-NaN slice' RuntimeWarning (expected outside a run's span)."""

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


def write_json_run(path, run):
    """One run's record (run.py --resume reads it back)."""
    with open(path + ".tmp", "w") as f:
        json.dump(dict(run, episodes=_round_episodes(run.get("episodes") or [])), f, separators=(",", ":"))
    os.replace(path + ".tmp", path)


def load_json(path):
    with open(path) as f:
        data = json.load(f)
    runs = [summarize_run(r) for r in data["runs"]]
    return data.get("meta", {}), runs


def write_markdown(path, meta, runs, png_name=None):
    agg = aggregate(runs)
    parts = ["# Benchmark: ours and Stable-Baselines3, side by side", ""]
    if meta:
        parts += [f"Command: `{meta.get('command', '')}`  ", f"Date: {meta.get('date', '')}  ",
                  f"Machine: {meta.get('machine', '')}  ", f"Versions: {meta.get('versions', '')}  ",
                  f"Commit: {meta.get('commit') or 'unknown'}" + (f"; total time {meta['total_s']} s" if meta.get("total_s") else "")
                  + ("; each run's record (its own machine, date, versions and code hash) is in runs/"
                     if meta.get("batch") else "")
                  + ("; INTERRUPTED (partial results)" if meta.get("interrupted") else "")
                  + (f"; PARTIAL: {meta['partial']}" if meta.get("partial") else "") + "  ",
                  "Seeds and budgets (env steps): " + "; ".join(
                      f"{e} {a} {s}×{fmt_steps(b)}" for e, a, s, b in meta.get("plan", [])), ""]
    parts += [markdown_table(agg), "", notes_text(runs, meta.get("keep_training", True) if meta else True)]
    base = baseline_table(agg)
    if base:
        parts += ["", f"This code against the baseline {meta.get('baseline', '')}:", "", base]
    if png_name:
        parts += ["", f"![learning curves]({png_name})"]
    fail = failed_runs_text(runs)
    if fail:
        parts.append(fail)
    text = "\n".join(parts) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text
