"""TD Actor-Critic for any Gymnasium env with a Discrete action space (observations are flattened).

The posts' minimalRL ``ac.py``, made correct for Gymnasium and fast on a CPU. For every transition
(s, a, r, s') of a rollout of ``n_rollout`` steps in each of ``num_envs`` envs (N = n_rollout * num_envs):

    TD target   y = r + γ·V(s')·(1 − terminated)      a truncated episode end keeps the bootstrap V(s')
    advantage   δ = y − V(s)                          a constant (detached): only the critic learns V
    loss        L = −log π(a|s)·δ + smooth_l1(V(s), y) − c_H·H[π(·|s)]     (MSE with --separate-networks)

Shapes: s, s' (N, obs_dim); a, r, terminated, y, δ (N,); policy logits (N, n_actions).
"""
import common  # first: Ctrl-C and SIGTERM stay quiet while torch loads

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

hp = common.hp


@dataclass
class Args(common.RunArgs):
    """Hyperparameters, each with its default, the posts' value and its range (README: why they differ)."""
    env_id: str = "CartPole-v1"
    total_timesteps: int = 500_000
    learning_rate: float = hp(1e-3, "Adam step size", post=2e-4, range="(0, inf)")
    anneal_lr: bool = hp(True, "decay the learning rate linearly to 0 over --total-timesteps", post=False)
    gamma: float = hp(0.98, "discount γ", post=0.98, range="[0, 1]")
    n_rollout: int = hp(10, "steps per env between updates", post=10, range="(0, inf)")
    num_envs: int = hp(8, "envs stepped side by side: one forward pass acts for all", post=1, range="(0, inf)")
    hidden: int = hp(256, "units in the hidden layer", post=256, range="(0, inf)")
    reward_scale: float = hp(0.01, "rewards are multiplied by this for training", post="r/100", range="(0, inf)")
    norm_obs: bool = hp(False, "normalise observations by running mean and std (saved with the model)", post=False)
    ent_coef: float = hp(0.0, "entropy bonus c_H", post=0.0, range="[0, inf)")
    max_grad_norm: float = hp(0.0, "clip the gradient norm to this (0: no clipping)", post=0.0, range="[0, inf)")
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


def compute_losses(model, s, a, r, s_next, terminated, gamma):
    """Policy loss −log π(a|s)·δ, critic loss and entropy (all means over the batch), and δ itself."""
    logits, v_s = model(s)
    with torch.no_grad():
        y = td_target(r, model.v(s_next), terminated, gamma)
    delta = (y - v_s).detach()                       # δ = r + γ·V(s') − V(s), a constant for the actor
    log_pi = F.log_softmax(logits, dim=-1)
    log_pi_a = log_pi.gather(1, a.unsqueeze(1)).squeeze(1)
    policy_loss = -(log_pi_a * delta).mean()
    value_loss = F.mse_loss(v_s, y) if model.separate else F.smooth_l1_loss(v_s, y)
    entropy = -(log_pi.exp() * log_pi).sum(-1).mean()
    return policy_loss, value_loss, entropy, delta


def train_net(model, optimizer, s, a, r, s_next, terminated, gamma, ent_coef=0.0, max_grad_norm=0.0):
    """One gradient step on a rollout batch; returns (policy_loss, value_loss, entropy), detached."""
    policy_loss, value_loss, entropy, _ = compute_losses(model, s, a, r, s_next, terminated, gamma)
    loss = policy_loss + value_loss - ent_coef * entropy
    if torch.isfinite(loss):      # a nan/inf loss never reaches the weights: the caller stops (check_finite)
        optimizer.zero_grad()
        loss.backward()
        if max_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
    return policy_loss.detach(), value_loss.detach(), entropy.detach()


def train(args):
    if args.n_rollout * args.num_envs > args.total_timesteps:
        raise common.UsageError(f"one rollout (--n-rollout x --num-envs = {args.n_rollout * args.num_envs} env "
                                f"steps) is longer than --total-timesteps {args.total_timesteps}")
    envs, obs_rms = common.make_vector_env(args.env_id, args.num_envs, args.norm_obs)
    common.default_target(args, envs.envs[0])
    obs_dim, n_actions = common.spaces_of(envs.envs[0])
    model_kwargs = dict(obs_dim=obs_dim, n_actions=n_actions, hidden=args.hidden, separate=args.separate_networks)
    model = ActorCritic(**model_kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    log = common.RunLogger(args, "actor_critic", model_kwargs)

    # Rollout storage, filled in place through NumPy views: no tensors are built per step.
    T, N = args.n_rollout, args.num_envs
    s_buf, s_next_buf = torch.zeros(T, N, obs_dim), torch.zeros(T, N, obs_dim)
    a_buf, r_buf, term_buf = torch.zeros(T, N, dtype=torch.long), torch.zeros(T, N), torch.zeros(T, N)
    s_np, s_next_np, a_np, r_np, term_np = (b.numpy() for b in (s_buf, s_next_buf, a_buf, r_buf, term_buf))

    s, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    step, updates = 0, 0
    with log.training(model, obs_rms):
        while step < args.total_timesteps and not log.done():
            for t in range(T):
                s_np[t] = s
                with torch.no_grad():
                    prob = F.softmax(model.pi(s_buf[t]), dim=-1)
                    a_np[t] = torch.multinomial(prob, 1).squeeze(1).numpy()
                s, r, terminated, truncated, info = envs.step(a_np[t])
                s_next_np[t], r_np[t], term_np[t] = s, r * args.reward_scale, terminated
                step += N
                for i in np.flatnonzero(terminated | truncated):
                    s_next_np[t, i] = info["final_obs"][i]   # the real s' of the last step, not the reset obs
                    episode = info["final_info"]["episode"]
                    log.episode(episode["r"][i], episode["l"][i], step)
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * max(1.0 - step / args.total_timesteps, 0.0)
            losses = train_net(model, optimizer, s_buf.view(T * N, -1), a_buf.view(-1), r_buf.view(-1),
                               s_next_buf.view(T * N, -1), term_buf.view(-1), args.gamma, args.ent_coef,
                               args.max_grad_norm)
            updates, log.step = updates + 1, step
            common.check_finite(updates, step, **dict(zip(("policy_loss", "value_loss", "entropy"), losses)))
            if updates % 50 == 0:
                log.scalars({f"losses/{k}": v.item() for k, v in zip(("policy_loss", "value_loss", "entropy"), losses)}
                            | {"charts/learning_rate": optimizer.param_groups[0]["lr"]}, step)
    envs.close()
    return model, log


def greedy(model):
    """a = argmax π(·|s): the policy an evaluation plays."""
    @torch.no_grad()
    def act(obs):
        return int(model.pi(torch.as_tensor(obs, dtype=torch.float32)).argmax())
    return act


@common.command   # one-line errors, Ctrl-C saves: on the command line and in a notebook
def main(argv=None):
    args = common.parse_args(Args, __doc__, argv)
    common.prepare(args)          # seeds; --render/--video fail now, not after training
    if not args.load:
        _, log = train(args)
        if not (args.render or args.video):
            return
        args.load = log.model_path    # watch the model as saved
    saved = common.load_model(args.load, "actor_critic", args)
    model = ActorCritic(**saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    common.evaluate(args, True, greedy(model), saved)


if __name__ == "__main__":
    main()
