"""Soft Actor-Critic for any Gymnasium env with a Box observation and a Box action space.

The posts' minimalRL ``sac.py``, made correct for any action dimension and bounds, and fast on a CPU.
Policy: u ~ N(μ(s), σ(s)²), a = bias + scale·tanh(u), elementwise, so a lies in the env's [low, high]
(scale = (high − low)/2, bias = (high + low)/2). Change of variables, summed over the D action dims:

    log π(a|s) = Σ_i [ log N(u_i; μ_i, σ_i) − log(1 − tanh²(u_i)) − log scale_i ]
    log(1 − tanh²(u)) = 2·(log 2 − u − softplus(−2u))                    (no log of ~0)

For a batch (s, a, r, s', terminated) of B transitions from the replay buffer, with α = exp(log α):

    TD target   y = r + γ·(1 − terminated)·(min_j Q'_j(s', a') − α·log π(a'|s')),  a' ~ π(·|s')
    critics     L_Q = Σ_j mean (Q_j(s, a) − y)²          (a truncated episode end keeps the bootstrap)
    actor       L_π = mean (α·log π(ã|s) − min_j Q_j(s, ã)),  ã ~ π(·|s) reparameterised
    temperature L_α = −mean log α·(log π(ã|s) + H̄),      H̄ = target entropy (default −D)
    targets     θ' ← (1 − τ)·θ' + τ·θ

Shapes: s, s' (B, obs_dim); a (B, D); r, terminated, y, log π (B,); twin Q values (2, B).
"""
import copy
import math

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

# Hyperparameters (the post's value in brackets; README explains each change)
lr_pi = 1e-3            # [0.0005]
lr_q = 1e-3             # [0.001]
lr_alpha = 1e-3         # [0.001]
init_alpha = 0.1        # [0.01]
gamma = 0.98            # [0.98]
batch_size = 64         # [32]
buffer_limit = 50_000   # [50000]
tau = 0.01              # [0.01] target soft-update rate
reward_scale = 1.0      # [r/10.0]
utd_ratio = 1.0         # [0.1]  gradient updates per env step (the post: 20 per 200-step episode)
update_every = 1        # [200]  env steps between bursts of updates (the post: at each episode end)
learning_starts = 500   # [1000] env steps before the first update
random_steps = 500      # [0]    uniformly random actions for the first steps (warm-up)
actor_hidden = (64, 64)    # [128]
critic_hidden = (64, 64)   # [128, 32] (the post's fc_s/fc_a split is a block of this first layer)
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0   # [softplus σ]


class ReplayBuffer:
    """Preallocated ring buffer: O(1) put, one vectorised gather per sample.

    Row layout of ``data``: [s (obs_dim) | a (D) | r | terminated | s' (obs_dim)].
    """

    def __init__(self, capacity, obs_dim, act_dim):
        self.capacity, self.size, self.ptr = capacity, 0, 0
        self.split = [obs_dim, act_dim, 1, 1, obs_dim]
        self.data = torch.zeros(capacity, sum(self.split))
        self.np = self.data.numpy()              # a view: writes go straight into the tensor
        self.cols = np.cumsum([0] + self.split)

    def put(self, s, a, r, terminated, s_next):
        row, c = self.np[self.ptr], self.cols
        row[c[0]:c[1]], row[c[1]:c[2]], row[c[2]], row[c[3]], row[c[4]:] = s, a, r, terminated, s_next
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n, device="cpu"):
        """-> s (n, obs_dim), a (n, D), r (n,), terminated (n,), s' (n, obs_dim), float32 on ``device``."""
        batch = self.data[torch.randint(self.size, (n,))].to(device)
        s, a, r, term, s_next = batch.split(self.split, dim=1)
        return s, a, r.squeeze(1), term.squeeze(1), s_next


def mlp(sizes):
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class PolicyNet(nn.Module):
    """Squashed Gaussian π(a|s) on the box [low, high] (see the module docstring)."""

    def __init__(self, obs_dim, act_dim, hidden, low, high):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 2 * act_dim])        # -> μ and log σ
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.register_buffer("scale", (high - low) / 2)
        self.register_buffer("bias", (high + low) / 2)
        # Σ_i log scale_i + D/2·log 2π + D·2·log 2: the constant part of −log π
        self.register_buffer("log_const", (self.scale.log().sum() + act_dim * (0.5 * math.log(2 * math.pi)
                                                                                + 2 * math.log(2))))

    def forward(self, s):
        """(B, obs_dim) -> a ~ π(·|s) (B, D) reparameterised, log π(a|s) (B,)."""
        mu, log_std = self.net(s).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        eps = torch.randn_like(mu)
        u = mu + log_std.exp() * eps                          # u ~ N(μ, σ²)
        a = self.bias + self.scale * torch.tanh(u)
        # log N(u; μ, σ) − log(1 − tanh² u) − log scale, with log(1 − tanh² u) = 2(log 2 − u − softplus(−2u))
        log_prob = (-0.5 * eps.square() - log_std + 2 * (u + F.softplus(-2 * u))).sum(-1) - self.log_const
        return a, log_prob

    @torch.no_grad()
    def act(self, s, deterministic=False):
        """Action for the env: sampled, or the mean bias + scale·tanh(μ); clamped against float rounding."""
        mu, log_std = self.net(s).chunk(2, dim=-1)
        u = mu if deterministic else mu + log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp() * torch.randn_like(mu)
        return (self.bias + self.scale * torch.tanh(u)).clamp(self.low, self.high)


class TwinQ(nn.Module):
    """Q_1(s, a) and Q_2(s, a) in one module: layer k has a weight (2, in, out), run with one baddbmm."""

    def __init__(self, obs_dim, act_dim, hidden):
        super().__init__()
        sizes = [obs_dim + act_dim, *hidden, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(n_in)                        # nn.Linear's default initialisation
            self.weights.append(nn.Parameter(torch.empty(2, n_in, n_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(2, 1, n_out).uniform_(-bound, bound)))

    def forward(self, s, a):
        """s (B, obs_dim), a (B, D) -> Q values (2, B)."""
        x = torch.cat([s, a], dim=-1).expand(2, -1, -1)
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if k < len(self.weights) - 1:
                x = F.relu(x)
        return x.squeeze(-1)


def calc_target(pi, q_target, log_alpha, r, terminated, s_next, gamma):
    """y = r + γ·(1 − terminated)·(min_j Q'_j(s', a') − α·log π(a'|s')), a' ~ π(·|s'); shape (B,)."""
    with torch.no_grad():
        a_next, log_prob = pi(s_next)
        soft_q = q_target(s_next, a_next).min(0).values - log_alpha.exp() * log_prob
        return r + gamma * (1.0 - terminated) * soft_q


def soft_update(net, target, tau):
    """θ' ← θ' + τ·(θ − θ')."""
    with torch.no_grad():
        for p_target, p in zip(target.parameters(), net.parameters()):
            p_target.lerp_(p, tau)


class SAC:
    """The networks, their optimizers and one gradient update (critics, then actor and α, then targets)."""

    def __init__(self, obs_dim, act_dim, low, high, args):
        self.model_kwargs = dict(obs_dim=obs_dim, act_dim=act_dim, hidden=list(args.actor_hidden),
                                 low=[float(x) for x in low], high=[float(x) for x in high])
        dev, self.args = args.device, args
        self.pi = PolicyNet(**self.model_kwargs).to(dev)
        self.q = TwinQ(obs_dim, act_dim, args.critic_hidden).to(dev)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(args.init_alpha), device=dev, requires_grad=True)
        self.target_entropy = -act_dim if args.target_entropy is None else args.target_entropy
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=args.lr_q, fused=True)
        self.pi_opt = torch.optim.Adam([{"params": self.pi.parameters(), "lr": args.lr_pi},
                                        {"params": [self.log_alpha], "lr": args.lr_alpha}], fused=True)
        self.actor_params = list(self.pi.parameters()) + [self.log_alpha]

    def update(self, batch):
        s, a, r, terminated, s_next = batch
        y = calc_target(self.pi, self.q_target, self.log_alpha, r, terminated, s_next, self.args.gamma)
        qf_loss = (self.q(s, a) - y).square().mean(1)              # (2,): one MSE per critic
        self.q_opt.zero_grad(set_to_none=True)
        qf_loss.sum().backward()
        self.q_opt.step()

        a_pi, log_prob = self.pi(s)
        alpha = self.log_alpha.exp()
        actor_loss = (alpha.detach() * log_prob - self.q(s, a_pi).min(0).values).mean()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        # Gradients for the actor and log α only: the critics' weight gradients are not needed here.
        grads = torch.autograd.grad(actor_loss + alpha_loss, self.actor_params)
        for p, g in zip(self.actor_params, grads):
            p.grad = g
        self.pi_opt.step()
        soft_update(self.q, self.q_target, self.args.tau)
        return qf_loss, actor_loss, alpha, alpha_loss


def make_env(env_id, render_mode=None):
    env = common.make_env(env_id, render_mode, action_types=(gym.spaces.Space,), what="sac.py")
    space = env.action_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1
            and np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        env.close()
        raise common.UsageError(f"{env_id} has the action space {space}; SAC here needs a continuous (Box) action "
                                "space: a flat vector of actions with finite bounds")
    return env


def parse_args(argv=None):
    p = common.base_parser("Soft Actor-Critic (minimalRL sac.py, fixed for any Box action space)",
                           "Pendulum-v1", 30_000, __doc__, default_window=None,
                           window_help="episodes averaged for --target-return (default: 10 on Pendulum-v1, "
                                       "whose target is -200, else 100)")
    p.set_defaults(print_interval=5)   # Pendulum episodes are 200 steps: a line every 1000 steps
    g = p.add_argument_group("hyperparameters")
    g.add_argument("--lr-pi", type=common.positive_float, default=lr_pi, help="actor learning rate")
    g.add_argument("--lr-q", type=common.positive_float, default=lr_q, help="critic learning rate")
    g.add_argument("--lr-alpha", type=common.positive_float, default=lr_alpha, help="temperature learning rate")
    g.add_argument("--init-alpha", type=common.positive_float, default=init_alpha, help="initial temperature α")
    g.add_argument("--target-entropy", type=float, default=None, help="H̄ (default: −dim(A))")
    g.add_argument("--gamma", type=float, default=gamma)
    g.add_argument("--tau", type=common.positive_float, default=tau, help="target soft-update rate")
    g.add_argument("--batch-size", type=common.positive_int, default=batch_size)
    g.add_argument("--buffer-size", type=common.positive_int, default=buffer_limit)
    g.add_argument("--reward-scale", type=common.positive_float, default=reward_scale)
    g.add_argument("--utd-ratio", type=common.positive_float, default=utd_ratio,
                   help="gradient updates per env step (update-to-data ratio)")
    g.add_argument("--update-every", type=common.positive_int, default=update_every,
                   help="env steps between bursts of updates (each burst makes update_every*utd_ratio updates)")
    g.add_argument("--learning-starts", type=int, default=learning_starts, help="env steps before the first update")
    g.add_argument("--random-steps", type=int, default=random_steps,
                   help="env steps with uniformly random actions at the start (warm-up)")
    g.add_argument("--actor-hidden", type=common.positive_int, nargs="+", default=list(actor_hidden),
                   help="hidden layer sizes of the policy network")
    g.add_argument("--critic-hidden", type=common.positive_int, nargs="+", default=list(critic_hidden),
                   help="hidden layer sizes of each Q network")
    g.add_argument("--device", default="cpu", help="torch device: cpu, or cuda (if available)")
    return p.parse_args(argv)


def check_device(args):
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise common.UsageError(f"--device: unknown device '{args.device}' (use cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise common.UsageError(f"--device {args.device}: CUDA is not available here (torch {torch.__version__}, "
                                f"cuda build: {torch.version.cuda}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise common.UsageError(f"--device: '{args.device}' is not supported (use cpu or cuda)")
    args.device = str(device)


def load_for_eval(args):
    saved = common.load_model(args.load, "sac")
    env_id = common.resolve_env_id(args, "Pendulum-v1", saved)
    pi = PolicyNet(**saved["model_kwargs"])
    pi.load_state_dict(saved["state_dict"])
    return env_id, pi.to(args.device)


def watch(args, env_id, pi):
    """Play --eval-episodes with the deterministic (mean) action a = bias + scale·tanh(μ)."""
    env = make_env(env_id)
    shapes = (env.observation_space.shape[0], env.action_space.shape[0])
    env.close()
    if shapes != (pi.net[0].in_features, pi.bias.shape[0]):
        raise common.UsageError(f"the model was trained on (obs_dim, act_dim) = "
                                f"{(pi.net[0].in_features, pi.bias.shape[0])}, but {env_id} has {shapes}")

    def act(obs):
        return pi.act(torch.as_tensor(obs, dtype=torch.float32, device=args.device), deterministic=True).cpu().numpy()
    common.evaluate(lambda mode: make_env(env_id, mode), act, args.eval_episodes, args.seed, args.render, args.video)


def log_losses(log, losses, updates, step):
    qf_loss, actor_loss, alpha, alpha_loss = (x.detach().cpu() for x in losses)
    log.scalars({"losses/qf1_loss": qf_loss[0].item(), "losses/qf2_loss": qf_loss[1].item(),
                 "losses/actor_loss": actor_loss.item(), "losses/alpha": alpha.item(),
                 "losses/alpha_loss": alpha_loss.item(), "charts/updates_per_s": updates / log.elapsed()}, step)


def train(args):
    env = make_env(common.resolve_env_id(args, "Pendulum-v1"))
    if args.target_return is None and args.env_id == "Pendulum-v1":
        args.target_return = -200.0     # Pendulum's spec has no reward_threshold
    common.default_target(args, env)
    if args.return_window is None:
        args.return_window = 10 if args.env_id == "Pendulum-v1" else 100
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agent = SAC(obs_dim, act_dim, env.action_space.low, env.action_space.high, args)
    memory = ReplayBuffer(args.buffer_size, obs_dim, act_dim)
    log = common.RunLogger(args, "sac")

    s, _ = env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    step, updates, credit, ep_ret, ep_len = 0, 0, 0.0, 0.0, 0
    reason = "reached --total-timesteps"
    try:
        while step < args.total_timesteps:
            if step < args.random_steps:
                a = env.action_space.sample()
            else:
                a = agent.pi.act(torch.as_tensor(s, dtype=torch.float32, device=args.device)).cpu().numpy()
            s_next, r, terminated, truncated, _ = env.step(a)
            memory.put(s, a, r * args.reward_scale, terminated, s_next)
            s, step, ep_ret, ep_len = s_next, step + 1, ep_ret + float(r), ep_len + 1
            if terminated or truncated:
                log.episode(ep_ret, ep_len, step)
                s, _ = env.reset()
                ep_ret, ep_len = 0.0, 0
                if log.solved():
                    reason = f"solved (mean return >= {args.target_return:g})"
                    break
            if step >= args.learning_starts:
                credit += args.utd_ratio                 # updates owed: utd_ratio per env step
                while step % args.update_every == 0 and credit >= 1.0:
                    losses = agent.update(memory.sample(args.batch_size, args.device))
                    credit, updates = credit - 1.0, updates + 1
                    if updates % 200 == 0:
                        log_losses(log, losses, updates, step)
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        common.save_model(log.model_path, "sac", args.env_id, agent.model_kwargs,
                          agent.pi.state_dict(), vars(args))
        log.close(step, reason)
        env.close()
        print(f"{updates} gradient updates, {updates / max(log.elapsed(), 1e-9):.0f} updates/s")
    print(f"model saved to {log.model_path}\n  watch it: python sac.py --load {log.model_path} --render")
    if reason == "interrupted":
        raise KeyboardInterrupt  # saved and flushed: run_cli exits quietly with status 130
    return agent, log


def main(argv=None):
    args = parse_args(argv)
    common.prepare(args)          # seeds; --render/--video fail now, not after training
    check_device(args)
    if args.load:
        env_id, pi = load_for_eval(args)
    else:
        agent, _ = train(args)
        env_id, pi = args.env_id, agent.pi
        if not (args.render or args.video):
            return
    watch(args, env_id, pi)


if __name__ == "__main__":
    common.run_cli(main)
