"""TD Actor-Critic for any Gymnasium env with a Box observation and a Discrete action space.

The posts' minimalRL ``ac.py``, made correct for Gymnasium and fast on a CPU. For every transition
(s, a, r, s') of a rollout of ``n_rollout`` steps in each of ``num_envs`` envs (N = n_rollout * num_envs):

    TD target   y = r + γ·V(s')·(1 − terminated)      a truncated episode end keeps the bootstrap V(s')
    advantage   δ = y − V(s)                          a constant (detached): only the critic learns V
    loss        L = −log π(a|s)·δ + smooth_l1(V(s), y) − c_H·H[π(·|s)]     (MSE with --separate-networks)

Shapes: s, s' (N, obs_dim); a, r, terminated, y, δ (N,); policy logits (N, n_actions).
"""
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

import common

# Hyperparameters (the post's value in brackets; README explains each change)
learning_rate = 0.001    # [0.0002] a batch of 80 transitions tolerates a 5x larger step
gamma = 0.98             # [0.98]
n_rollout = 10           # [10] steps per env between updates
num_envs = 8             # [1]  envs stepped together: one forward pass acts for all 8
hidden = 256             # [256] units in the hidden layer
reward_scale = 0.01      # [r/100.0]
ent_coef = 0.0           # [0]  entropy bonus c_H


class ActorCritic(nn.Module):
    """Policy π(·|s) = softmax(logits) and value V(s), with a shared trunk (the post) or two networks."""

    def __init__(self, obs_dim, n_actions, hidden=hidden, separate=False):
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


def compute_losses(model, s, a, r, s_next, terminated, gamma=gamma):
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


def train_net(model, optimizer, s, a, r, s_next, terminated, gamma=gamma, ent_coef=ent_coef):
    """One gradient step on a rollout batch; returns (policy_loss, value_loss, entropy), detached."""
    policy_loss, value_loss, entropy, _ = compute_losses(model, s, a, r, s_next, terminated, gamma)
    optimizer.zero_grad()
    (policy_loss + value_loss - ent_coef * entropy).backward()
    optimizer.step()
    return policy_loss.detach(), value_loss.detach(), entropy.detach()


def make_env(env_id, render_mode=None):
    return common.make_env(env_id, render_mode, what="actor_critic.py (a discrete-action method)")


def parse_args(argv=None):
    p = common.base_parser("TD Actor-Critic (minimalRL ac.py, fixed for Gymnasium)", "CartPole-v1", 500_000, __doc__)
    g = p.add_argument_group("hyperparameters")
    g.add_argument("--learning-rate", type=common.positive_float, default=learning_rate, help="Adam step size")
    g.add_argument("--gamma", type=float, default=gamma, help="discount γ")
    g.add_argument("--n-rollout", type=common.positive_int, default=n_rollout, help="steps per env between updates")
    g.add_argument("--num-envs", type=common.positive_int, default=num_envs, help="envs stepped side by side")
    g.add_argument("--hidden", type=common.positive_int, default=hidden, help="hidden units")
    g.add_argument("--reward-scale", type=common.positive_float, default=reward_scale,
                   help="rewards are multiplied by this for training (the post: r/100)")
    g.add_argument("--ent-coef", type=float, default=ent_coef, help="entropy bonus coefficient")
    g.add_argument("--separate-networks", action="store_true",
                   help="separate policy and value networks with an MSE critic loss (posts 001/003)")
    return p.parse_args(argv)


def load_for_eval(args, algo="actor_critic"):
    saved = common.load_model(args.load, algo)
    env_id = common.resolve_env_id(args, "CartPole-v1", saved)
    model = ActorCritic(**saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    return env_id, model


def watch(args, env_id, model, make=make_env):
    """Play --eval-episodes greedily: a = argmax π(·|s)."""
    @torch.no_grad()
    def act(obs):
        return int(model.pi(torch.as_tensor(obs, dtype=torch.float32)).argmax())
    common.evaluate(lambda mode: make(env_id, mode), act, args.eval_episodes, args.seed, args.render, args.video)


def train(args):
    envs = gym.vector.SyncVectorEnv([lambda: make_env(args.env_id)] * args.num_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    common.default_target(args, envs.envs[0])
    obs_dim, n_actions = envs.single_observation_space.shape[0], int(envs.single_action_space.n)
    model_kwargs = dict(obs_dim=obs_dim, n_actions=n_actions, hidden=args.hidden, separate=args.separate_networks)
    model = ActorCritic(**model_kwargs)
    optimizer = optim.Adam(model.parameters(), lr=args.learning_rate)
    log = common.RunLogger(args, "actor_critic")

    # Rollout storage, filled in place through NumPy views: no tensors are built per step.
    T, N = args.n_rollout, args.num_envs
    s_buf, s_next_buf = torch.zeros(T, N, obs_dim), torch.zeros(T, N, obs_dim)
    a_buf, r_buf, term_buf = torch.zeros(T, N, dtype=torch.long), torch.zeros(T, N), torch.zeros(T, N)
    s_np, s_next_np, a_np, r_np, term_np = (b.numpy() for b in (s_buf, s_next_buf, a_buf, r_buf, term_buf))
    ep_ret, ep_len = np.zeros(N), np.zeros(N, dtype=np.int64)

    s, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    step, updates, reason = 0, 0, "reached --total-timesteps"
    try:
        while step < args.total_timesteps:
            for t in range(T):
                s_np[t] = s
                with torch.no_grad():
                    prob = F.softmax(model.pi(s_buf[t]), dim=-1)
                    a_np[t] = torch.multinomial(prob, 1).squeeze(1).numpy()
                s, r, terminated, truncated, info = envs.step(a_np[t])
                s_next_np[t] = s
                r_np[t] = r * args.reward_scale
                term_np[t] = terminated
                step += N
                ep_ret += r
                ep_len += 1
                for i in np.flatnonzero(terminated | truncated):
                    s_next_np[t, i] = info["final_obs"][i]   # the real s' of the last step, not the reset obs
                    log.episode(ep_ret[i], int(ep_len[i]), step)
                    ep_ret[i], ep_len[i] = 0.0, 0
            losses = train_net(model, optimizer, s_buf.view(T * N, -1), a_buf.view(-1), r_buf.view(-1),
                               s_next_buf.view(T * N, -1), term_buf.view(-1), args.gamma, args.ent_coef)
            updates += 1
            if updates % 50 == 0:
                log.scalars(dict(zip(("losses/policy_loss", "losses/value_loss", "losses/entropy"),
                                     (x.item() for x in losses))), step)
            if log.solved():
                reason = f"solved (mean return >= {args.target_return:g})"
                break
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        common.save_model(log.model_path, "actor_critic", args.env_id, model_kwargs, model.state_dict(), vars(args))
        log.close(step, reason)
        envs.close()
    print(f"model saved to {log.model_path}\n  watch it: python actor_critic.py --load {log.model_path} --render")
    if reason == "interrupted":
        raise KeyboardInterrupt  # saved and flushed: run_cli exits quietly with status 130
    return model, log


def main(argv=None):
    args = parse_args(argv)
    common.prepare(args)          # seeds; --render/--video fail now, not after training
    if args.load:
        env_id, model = load_for_eval(args)
    else:
        common.resolve_env_id(args, "CartPole-v1")
        model, _ = train(args)
        env_id = args.env_id
        if not (args.render or args.video):
            return
    watch(args, env_id, model)


if __name__ == "__main__":
    common.run_cli(main)
