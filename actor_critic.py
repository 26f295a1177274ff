"""TD Actor-Critic for any Gymnasium env with a Discrete action space (observations are flattened).

The posts' minimalRL ``ac.py``, made correct for Gymnasium and fast on a CPU. For every transition
(s_t, a_t, r_t, s'_t) of a rollout of T = ``n_rollout`` steps in each of ``num_envs`` envs:

    TD error    δ_t = r_t + γ·V(s'_t)·(1 − terminated_t) − V(s_t)    a truncated end keeps the bootstrap V(s')
    advantage   A_t = δ_t + γλ·(1 − done_t)·A_{t+1}                  GAE: λ = 0 is the post's A_t = δ_t
    loss        L = −log π(a|s)·A + smooth_l1(V(s), A + V(s)) − c_H·H[π(·|s)]    (MSE with --separate-networks)

A and the value target A + V(s) are constants (detached). Shapes: s, s' (T, N, obs_dim); a, r, terminated,
done, δ, A (T, N); policy logits (T, N, n_actions). done = terminated or truncated: the episode ended there.
"""
import os
import signal
import sys

if __name__ == "__main__" and "IPython" not in sys.modules:   # a script: Ctrl-C while torch loads leaves quietly
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda signum, frame: os._exit(128 + signum))

from dataclasses import dataclass  # noqa: E402  (the slow imports come after the handlers)

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402

hp = common.hp
RMS_FIELDS = ("mean", "var", "count")   # the observation statistics saved in model.pt (--norm-obs)


@dataclass
class Args(common.RunArgs):
    """Hyperparameters, each with its default, the posts' value and its range (README: why they differ)."""
    env_id: str = "CartPole-v1"
    total_timesteps: int = 500_000
    learning_rate: float = hp(1e-3, "Adam step size", post=2e-4, range="(0, inf)")
    anneal_lr: bool = hp(False, "decay the learning rate linearly to 0 over --total-timesteps", post=False)
    gamma: float = hp(0.99, "discount γ", post=0.98, range="[0, 1]")
    gae_lambda: float = hp(0.95, "GAE λ: 0 is the post's one-step TD error, 1 the n-step return", post=0.0,
                           range="[0, 1]")
    n_rollout: int = hp(10, "steps per env between updates", post=10, range="(0, inf)")
    num_envs: int = hp(8, "envs stepped side by side: one forward pass acts for all", post=1, range="(0, inf)")
    hidden: int = hp(256, "units in the hidden layer", post=256, range="(0, inf)")
    reward_scale: float = hp(0.01, "rewards are multiplied by this for training", post="r/100", range="(0, inf)")
    norm_obs: bool = hp(False, "normalise observations by running mean and std (saved with the model)", post=False)
    norm_adv: bool = hp(False, "normalise the advantages of each rollout to mean 0, std 1", post=False)
    ent_coef: float = hp(1e-4, "entropy bonus c_H, next to the scaled rewards (1e-4 with --reward-scale 0.01 "
                               "weighs as 0.01 would on raw rewards)", post=0.0, range="[0, inf)")
    max_grad_norm: float = hp(0.5, "clip the gradient norm to this (0: no clipping)", post=0.0, range="[0, inf)")
    separate_networks: bool = hp(False, "separate policy and value networks, MSE critic loss (posts 001, 003)",
                                 post=False)


class ActorCritic(nn.Module):
    """Policy π(·|s) = softmax(logits) and value V(s), with a shared trunk (the post) or two networks."""

    def __init__(self, obs_dim, n_actions, hidden=256, separate=False):
        super().__init__()
        self.separate = separate
        if separate:  # posts 001/003: independent policy and value networks
            self.pi_net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))
            self.v_net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:         # minimalRL: fc1 shared by the heads fc_pi and fc_v
            self.fc1 = nn.Linear(obs_dim, hidden)
            self.fc_pi = nn.Linear(hidden, n_actions)
            self.fc_v = nn.Linear(hidden, 1)

    def forward(self, x):
        """(N, obs_dim) -> policy logits (N, n_actions), V(s) (N,)."""
        if self.separate:
            return self.pi_net(x), self.v_net(x).squeeze(-1)
        h = F.relu(self.fc1(x))
        return self.fc_pi(h), self.fc_v(h).squeeze(-1)

    def pi(self, x):
        return self.pi_net(x) if self.separate else self.fc_pi(F.relu(self.fc1(x)))

    def v(self, x):
        return self.v_net(x).squeeze(-1) if self.separate else self.fc_v(F.relu(self.fc1(x))).squeeze(-1)


def td_target(r, v_next, terminated, gamma):
    """y = r + γ·V(s')·(1 − terminated). Only termination cuts the bootstrap; truncation does not."""
    return r + gamma * v_next * (1.0 - terminated)


def gae_advantages(delta, done, gamma, lam):
    """A_t = δ_t + γλ·(1 − done_t)·A_{t+1}, backwards over the rollout: A_t = Σ_k (γλ)^k·δ_{t+k} up to the
    episode's end (done_t: step t + 1 belongs to a new episode and never leaks into this one's A). A truncated
    δ_t already holds its bootstrap V(s'). λ = 0: A_t = δ_t (the post); λ = 1: the n-step return − V(s_t)."""
    adv, next_adv = torch.zeros_like(delta), torch.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        adv[t] = next_adv = delta[t] + gamma * lam * (1.0 - done[t]) * next_adv
    return adv


def compute_losses(model, s, a, r, s_next, terminated, done, gamma, lam=0.0, norm_adv=False):
    """Policy loss −log π(a|s)·A, critic loss towards A + V(s) and entropy (means over the batch), and A."""
    logits, v_s = model(s)
    with torch.no_grad():                            # A and the value target are constants
        delta = td_target(r, model.v(s_next), terminated, gamma) - v_s    # δ = r + γ·V(s') − V(s)
        adv = gae_advantages(delta, done, gamma, lam)
        y = adv + v_s                                # the λ-return; λ = 0: the TD target
        if norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_pi = F.log_softmax(logits, dim=-1)
    log_pi_a = log_pi.gather(-1, a.unsqueeze(-1)).squeeze(-1)
    policy_loss = -(log_pi_a * adv).mean()
    value_loss = F.mse_loss(v_s, y) if model.separate else F.smooth_l1_loss(v_s, y)
    entropy = -(log_pi.exp() * log_pi).sum(-1).mean()
    return policy_loss, value_loss, entropy, adv


def train_net(model, optimizer, batch, args):
    """One gradient step on a rollout batch (s, a, r, s', terminated, done); returns the detached losses."""
    policy_loss, value_loss, entropy, _ = compute_losses(model, *batch, args.gamma, args.gae_lambda, args.norm_adv)
    loss = policy_loss + value_loss - args.ent_coef * entropy
    if torch.isfinite(loss):      # a nan/inf loss never reaches the weights: the caller stops (check_finite)
        optimizer.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
    return policy_loss.detach(), value_loss.detach(), entropy.detach()


def make_envs(args):
    """--num-envs envs from common.make_env, stepped together. SAME_STEP autoreset: info["final_obs"] is an episode's
    real last observation. --norm-obs: each env normalises by one shared running mean and variance (Gymnasium's
    vector NormalizeObservation would need NEXT_STEP autoreset); returns them, to be saved with the model."""
    def make():
        env = common.make_env(args.env_id, True)
        return gym.wrappers.NormalizeObservation(env) if args.norm_obs else env
    envs = gym.vector.SyncVectorEnv([make] * args.num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    for env in envs.envs[1:] if args.norm_obs else ():
        env.obs_rms = envs.envs[0].obs_rms
    return envs, envs.envs[0].obs_rms if args.norm_obs else None


def train(args):
    if args.n_rollout * args.num_envs > args.total_timesteps:
        raise common.UsageError(f"one rollout (--n-rollout x --num-envs = {args.n_rollout * args.num_envs} env "
                                f"steps) is longer than --total-timesteps {args.total_timesteps}")
    envs, obs_rms = make_envs(args)
    common.default_target(args, envs.envs[0])
    obs_dim, n_actions = common.spaces_of(envs.envs[0])
    model_kwargs = dict(obs_dim=obs_dim, n_actions=n_actions, hidden=args.hidden, separate=args.separate_networks)
    model = ActorCritic(**model_kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    log = common.Logger(args, "actor_critic")       # the run folder: config.json, TensorBoard, progress lines

    # Rollout storage, filled in place through NumPy views: no tensors are built per step.
    T, N = args.n_rollout, args.num_envs
    s_buf, s_next_buf = torch.zeros(T, N, obs_dim), torch.zeros(T, N, obs_dim)
    a_buf, r_buf, term_buf, done_buf = torch.zeros(T, N, dtype=torch.long), *torch.zeros(3, T, N)
    batch = (s_buf, a_buf, r_buf, s_next_buf, term_buf, done_buf)
    s_np, a_np, r_np, s_next_np, term_np, done_np = (b.numpy() for b in batch)

    s, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    step, updates, solved = 0, 0, False
    try:
        with common.graceful_stop():                # Ctrl-C/SIGTERM: stop_requested() turns true, the loop ends
            while step < args.total_timesteps and not solved and not common.stop_requested():
                for t in range(T):
                    s_np[t] = s
                    with torch.no_grad():
                        prob = F.softmax(model.pi(s_buf[t]), dim=-1)
                        a_np[t] = torch.multinomial(prob, 1).squeeze(1).numpy()
                    s, r, terminated, truncated, info = envs.step(a_np[t])
                    done = terminated | truncated
                    s_next_np[t], r_np[t], term_np[t], done_np[t] = s, r * args.reward_scale, terminated, done
                    step += N
                    for i in np.flatnonzero(done):
                        s_next_np[t, i] = info["final_obs"][i]   # the real s' of the last step, not the reset obs
                        episode = info["final_info"]["episode"]
                        log.episode(episode["r"][i], episode["l"][i], step)
                        solved = solved or common.solved(log, args)
                if args.anneal_lr:
                    optimizer.param_groups[0]["lr"] = args.learning_rate * max(1.0 - step / args.total_timesteps, 0)
                losses = dict(zip(("policy_loss", "value_loss", "entropy"), train_net(model, optimizer, batch, args)))
                updates += 1
                common.check_finite(updates, step, **losses)
                if updates % 50 == 0:
                    log.scalars({f"losses/{k}": v.item() for k, v in losses.items()}
                                | {"charts/learning_rate": optimizer.param_groups[0]["lr"]}, step)
    finally:                                        # whatever ended the loop, an error too: save model.pt
        envs.close()
        common.finish(log, step, model, model_kwargs, solved, obs_rms=obs_rms and {
            k: torch.tensor(np.asarray(getattr(obs_rms, k), np.float64)) for k in RMS_FIELDS})
    return model, log


def greedy(model, obs_rms=None):
    """a = argmax π(·|s): the policy an evaluation plays; ``obs_rms``: the saved statistics of --norm-obs, frozen."""
    mean, std = (obs_rms["mean"], (obs_rms["var"] + 1e-8).sqrt()) if obs_rms else (0.0, 1.0)  # NormalizeObservation's

    @torch.no_grad()
    def act(obs):
        return int(model.pi(((torch.as_tensor(obs, dtype=torch.float64) - mean) / std).float()).argmax())
    return act


@common.command   # one-line errors, Ctrl-C saves: on the command line and in a notebook
def main(argv=None):
    args = common.parse_args(Args, __doc__, argv)
    common.prepare(args, discrete=True)   # seeds; --render/--video fail now, not after training
    if not args.load:
        _, log = train(args)
        if not (args.render or args.video):
            return
        args.load = log.model_path    # watch the model as saved
    saved = common.load_model(args.load, "actor_critic", args)
    model = ActorCritic(**saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    common.evaluate(args, True, greedy(model, saved.get("obs_rms")), saved)


if __name__ == "__main__":
    main()
