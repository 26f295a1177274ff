"""Stable-Baselines3 reference runs for benchmarks/run.py, with the rl-baselines3-zoo hyperparameters of each env.

    a2c_sb3: A2C on CartPole-v1, Acrobot-v1, LunarLander-v3          (zoo a2c.yml; LunarLander: the -v2 entry)
    sac_sb3: SAC on Pendulum-v1, LunarLanderContinuous-v3, HalfCheetah-v5 (zoo sac.yml; -v2/-v3 entries),
             InvertedPendulum-v5 (not in the zoo: SB3's defaults)

On the CPU with one torch thread. Every finished episode is appended to ``--out`` (CSV: step, time, seconds,
return, length; time in epoch seconds, so that run.py can measure it from the moment it started this process).
The run stops once the mean of the last ``--return-window`` returns reaches ``--target-return`` (the rule our
scripts use), unless ``--keep-training``. Then ``--eval-episodes`` deterministic episodes (normalisation
statistics frozen) are played. A JSON summary (gradient updates, eval returns) goes next to the CSV.

    python benchmarks/sb3_anchor.py --algo a2c_sb3 --env-id Acrobot-v1 --seed 1 --out /tmp/a2c.csv
"""
import time

T_START = time.time()   # before the heavy imports: they count, as they do for our scripts

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

LIN = "linear"   # a learning rate decayed linearly to 0 over the run (the zoo's lin_<value>)
ZOO = {
    ("a2c_sb3", "CartPole-v1"): dict(n_envs=8, ent_coef=0.0),
    ("a2c_sb3", "Acrobot-v1"): dict(n_envs=16, normalize=True, ent_coef=0.0),
    ("a2c_sb3", "LunarLander-v3"): dict(n_envs=8, gamma=0.995, n_steps=5, learning_rate=(LIN, 8.3e-4),
                                        ent_coef=1e-5),
    ("sac_sb3", "Pendulum-v1"): dict(learning_rate=1e-3),
    ("sac_sb3", "LunarLanderContinuous-v3"): dict(batch_size=256, learning_rate=(LIN, 7.3e-4), buffer_size=1_000_000,
                                                  ent_coef="auto", gamma=0.99, tau=0.01, train_freq=1,
                                                  gradient_steps=1, learning_starts=10_000,
                                                  policy_kwargs=dict(net_arch=[400, 300])),
    ("sac_sb3", "HalfCheetah-v5"): dict(learning_starts=10_000),
    ("sac_sb3", "InvertedPendulum-v5"): dict(),
}


def zoo_settings(algo, env_id):
    """The zoo's hyperparameters for (algo, env), or SB3's defaults for an env the zoo does not list."""
    return dict(ZOO.get((algo, env_id), {}))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=("a2c_sb3", "sac_sb3"), required=True)
    p.add_argument("--env-id", default=None, help="default: CartPole-v1 (a2c_sb3), Pendulum-v1 (sac_sb3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="CSV of the episodes (a .json summary is written beside it)")
    p.add_argument("--total-timesteps", type=int, default=100_000)
    p.add_argument("--target-return", type=float, default=None)
    p.add_argument("--return-window", type=int, default=100)
    p.add_argument("--keep-training", action="store_true", help="do not stop when solved")
    p.add_argument("--eval-episodes", type=int, default=0, help="deterministic episodes after training")
    args = p.parse_args(argv)
    args.env_id = args.env_id or ("CartPole-v1" if args.algo == "a2c_sb3" else "Pendulum-v1")
    return args


def evaluate(model, env_id, vec_env, episodes, normalize):
    """Deterministic episodes on a fresh env (reset seeds 1..N, as our scripts' --load), frozen statistics."""
    import gymnasium as gym
    env, returns = gym.make(env_id), []
    for ep in range(episodes):
        obs, _ = env.reset(seed=1 + ep)
        ret, done = 0.0, False
        while not done:
            action, _ = model.predict(vec_env.normalize_obs(obs) if normalize else obs, deterministic=True)
            obs, r, terminated, truncated, _ = env.step(action)
            ret, done = ret + float(r), terminated or truncated
        returns.append(ret)
    env.close()
    return returns


def main(argv=None):
    args = parse_args(argv)
    import torch
    torch.set_num_threads(1)
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    kw = zoo_settings(args.algo, args.env_id)
    n_envs, normalize = kw.pop("n_envs", 1), kw.pop("normalize", False)
    lr = kw.get("learning_rate")
    if isinstance(lr, tuple):
        kw["learning_rate"] = lambda progress_remaining, lr0=lr[1]: progress_remaining * lr0
    env = make_vec_env(args.env_id, n_envs=n_envs, seed=args.seed)
    if normalize:
        env = VecNormalize(env, gamma=kw.get("gamma", 0.99))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    csv = open(args.out, "w")
    csv.write("step,time,seconds,return,length\n")

    class EpisodeRecorder(BaseCallback):
        """Logs each finished episode (Monitor's info['episode']: the true return) and stops once solved."""

        def __init__(self):
            super().__init__()
            self.returns, self.episodes, self.solved = collections.deque(maxlen=args.return_window), 0, False

        def _on_step(self):
            now = time.time()
            for info in self.locals["infos"]:
                ep = info.get("episode")
                if ep is None:
                    continue
                self.episodes += 1
                self.returns.append(float(ep["r"]))
                csv.write(f"{self.num_timesteps},{now:.4f},{now - T_START:.4f},{float(ep['r']):.4f},{int(ep['l'])}\n")
                self.solved = self.solved or (not args.keep_training and args.target_return is not None and len(
                    self.returns) == args.return_window and sum(self.returns) / args.return_window >= args.target_return)
            csv.flush()
            return not self.solved

    cls = sb3.A2C if args.algo == "a2c_sb3" else sb3.SAC
    model = cls("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0, **kw)
    rec = EpisodeRecorder()
    model.learn(total_timesteps=args.total_timesteps, callback=rec)
    t_end = time.time()
    csv.close()
    eval_returns = evaluate(model, args.env_id, env, args.eval_episodes, normalize) if args.eval_episodes else []
    env.close()
    reason = f"solved (mean return >= {args.target_return:g})" if rec.solved else "reached --total-timesteps"
    summary = dict(algo=args.algo, env_id=args.env_id, seed=args.seed, solved=rec.solved, reason=reason,
                   num_timesteps=int(model.num_timesteps), episodes=rec.episodes, updates=int(model._n_updates),
                   learning_starts=int(getattr(model, "learning_starts", 0)), t_start=T_START, t_end=t_end,
                   settings={k: str(v) for k, v in zoo_settings(args.algo, args.env_id).items()},
                   eval_returns=eval_returns, sb3_version=sb3.__version__, torch_version=torch.__version__)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    mean = f"{sum(rec.returns) / len(rec.returns):.1f}" if rec.returns else "n/a"
    print(f"{reason} after {model.num_timesteps} env steps, {rec.episodes} episodes, {t_end - T_START:.1f}s; "
          f"mean return of the last {len(rec.returns)} episodes: {mean}; {model._n_updates} gradient updates")
    if eval_returns:
        print(f"mean return over {len(eval_returns)} episodes: {sum(eval_returns) / len(eval_returns):.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
