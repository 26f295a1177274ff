"""Stable-Baselines3 anchor runs for benchmarks/run.py, with the rl-baselines3-zoo hyperparameters.

    a2c_sb3: A2C on CartPole-v1 (rl-zoo a2c.yml: n_envs 8, policy MlpPolicy, ent_coef 0.0; the rest SB3 defaults)
    sac_sb3: SAC on Pendulum-v1 (rl-zoo sac.yml: policy MlpPolicy, learning_rate 1e-3; the rest SB3 defaults)

On the CPU with one torch thread. Every finished episode is appended to ``--out`` (CSV: step, time, seconds,
return, length; time in epoch seconds, so that run.py can measure it from the moment it started this process;
seconds since this script started) and the run stops once the mean of the last ``--return-window`` returns reaches ``--target-return`` (the same rule as
our scripts), or at ``--total-timesteps``. A JSON summary (gradient updates, reason) goes next to the CSV.

    python benchmarks/sb3_anchor.py --algo a2c_sb3 --seed 1 --out /tmp/a2c.csv
"""
import time

T_START = time.time()   # before the heavy imports: they count, as they do for our scripts

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

ANCHORS = {
    # algo: (env, rl-zoo n_timesteps, target, window)
    "a2c_sb3": ("CartPole-v1", 500_000, 475.0, 100),
    "sac_sb3": ("Pendulum-v1", 20_000, -200.0, 10),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=sorted(ANCHORS), required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="CSV of the episodes (a .json summary is written beside it)")
    p.add_argument("--total-timesteps", type=int, default=None, help="budget (default: rl-zoo n_timesteps)")
    p.add_argument("--target-return", type=float, default=None)
    p.add_argument("--return-window", type=int, default=None)
    p.add_argument("--keep-training", action="store_true", help="do not stop when solved")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    env_id, budget, target, window = ANCHORS[args.algo]
    args.total_timesteps = args.total_timesteps or budget
    target = target if args.target_return is None else args.target_return
    window = window if args.return_window is None else args.return_window

    import torch
    torch.set_num_threads(1)
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    csv = open(args.out, "w")
    csv.write("step,time,seconds,return,length\n")
    csv.flush()

    class EpisodeRecorder(BaseCallback):
        """Logs each finished episode (Monitor's info['episode']) and stops training once solved."""

        def __init__(self):
            super().__init__()
            self.returns = collections.deque(maxlen=window)
            self.episodes = 0
            self.solved = False

        def _on_step(self):
            now = time.time()
            for info in self.locals["infos"]:
                ep = info.get("episode")
                if ep is None:
                    continue
                self.episodes += 1
                self.returns.append(float(ep["r"]))
                csv.write(f"{self.num_timesteps},{now:.4f},{now - T_START:.4f},{float(ep['r']):.4f},{int(ep['l'])}\n")
                if (not args.keep_training and len(self.returns) == window
                        and sum(self.returns) / window >= target):
                    self.solved = True
            csv.flush()
            return not self.solved

    if args.algo == "a2c_sb3":
        env = make_vec_env(env_id, n_envs=8, seed=args.seed)
        model = sb3.A2C("MlpPolicy", env, ent_coef=0.0, seed=args.seed, device="cpu", verbose=0)
    else:
        env = make_vec_env(env_id, n_envs=1, seed=args.seed)
        model = sb3.SAC("MlpPolicy", env, learning_rate=1e-3, seed=args.seed, device="cpu", verbose=0)
    rec = EpisodeRecorder()
    model.learn(total_timesteps=args.total_timesteps, callback=rec)
    t_end = time.time()
    csv.close()
    env.close()

    reason = f"solved (mean return >= {target:g})" if rec.solved else "reached --total-timesteps"
    mean = f"{sum(rec.returns) / len(rec.returns):.1f}" if rec.returns else "n/a"
    summary = dict(algo=args.algo, env_id=env_id, seed=args.seed, solved=rec.solved, reason=reason,
                   num_timesteps=int(model.num_timesteps), episodes=rec.episodes,
                   updates=int(model._n_updates), learning_starts=int(getattr(model, "learning_starts", 0)),
                   t_start=T_START, t_end=t_end, total_timesteps=args.total_timesteps,
                   target=target, window=window, sb3_version=sb3.__version__, torch_version=torch.__version__)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    print(f"{reason} after {model.num_timesteps} env steps, {rec.episodes} episodes, {t_end - T_START:.1f}s; "
          f"mean return of the last {len(rec.returns)} episodes: {mean}; {model._n_updates} gradient updates")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
