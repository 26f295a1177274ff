"""Soft Actor-Critic for any Gymnasium env with a bounded Box action space (observations are flattened).

The posts' minimalRL ``sac.py``, made correct for any action dimension and bounds, and fast on a CPU.
Policy: u ~ N(μ(s), σ(s)²), a = tanh(u) in [-1, 1]^D; the env steps with bias + scale·a, which lies in its
[low, high] (scale = (high − low)/2, bias = (high + low)/2). Log π, the critics, the replay buffer and the target
entropy all work on a in [-1, 1], so that H̄ = −D means the same for every action box (as in SB3 and Spinning Up).
Change of variables for tanh, summed over the D action dims:

    log π(a|s) = Σ_i [ log N(u_i; μ_i, σ_i) − log(1 − tanh²(u_i)) ]
    log(1 − tanh²(u)) = 2·(log 2 − u − softplus(−2u))                    (no log of ~0)

For a batch (s, a, r, s', terminated) of B transitions from the replay buffer, with α = exp(log α):

    TD target   y = r + γ·(1 − terminated)·(min_j Q'_j(s', a') − α·log π(a'|s')),  a' ~ π(·|s')
    critics     L_Q = Σ_j mean (Q_j(s, a) − y)²          (a truncated episode end keeps the bootstrap)
    actor       L_π = mean (α·log π(ã|s) − min_j Q_j(s, ã)),  ã ~ π(·|s) reparameterised
    temperature L_α = −mean log α·(log π(ã|s) + H̄),      H̄ = target entropy (default −D)
    targets     θ' ← (1 − τ)·θ' + τ·θ

Shapes: s, s' (B, obs_dim); a (B, D); r, terminated, y, log π (B,); twin Q values (2, B).
"""
import os
import signal
import sys

if __name__ == "__main__" and "IPython" not in sys.modules:   # a script: Ctrl-C while torch loads leaves quietly
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda signum, frame: os._exit(128 + signum))

import copy  # noqa: E402  (the slow imports come after the handlers)
import math  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402

hp = common.hp
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0   # [softplus σ]


@dataclass
class Args(common.RunArgs):
    """Hyperparameters, each with its default, the posts' value and its range (README: why they differ)."""
    env_id: str = "Pendulum-v1"
    total_timesteps: int = 30_000
    print_interval: int = 5
    lr_pi: float = hp(1e-3, "actor learning rate", post=5e-4, range="(0, inf)")
    lr_q: float = hp(1e-3, "critic learning rate", post=1e-3, range="(0, inf)")
    lr_alpha: float = hp(1e-3, "temperature learning rate", post=1e-3, range="(0, inf)")
    init_alpha: float = hp(0.1, "initial temperature α", post=0.01, range="(0, inf)")
    target_entropy: float = hp(None, "target entropy H̄ (default: −dim(A))")
    gamma: float = hp(0.99, "discount γ", post=0.98, range="[0, 1]")
    tau: float = hp(0.01, "target soft-update rate τ", post=0.01, range="(0, 1]")
    batch_size: int = hp(64, "transitions per gradient update", post=32, range="(0, inf)")
    buffer_size: int = hp(1_000_000, "replay buffer capacity", post=50_000, range="(0, inf)")
    reward_scale: float = hp(1.0, "rewards are multiplied by this for training", post="r/10", range="(0, inf)")
    utd_ratio: float = hp(1.0, "gradient updates per env step", post="0.1 (20 per episode)", range="(0, inf)")
    update_every: int = hp(1, "env steps between bursts of update_every·utd_ratio updates", post=200, range="(0, inf)")
    learning_starts: int = hp(500, "env steps before the first update", post=1000, range="[0, inf)")
    random_steps: int = hp(500, "env steps with uniformly random actions first (warm-up)", post=0, range="[0, inf)")
    actor_hidden: tuple = hp((64, 64), "hidden layer sizes of the policy network", post=(128,), range="(0, inf)")
    critic_hidden: tuple = hp((64, 64), "hidden layer sizes of each Q network", post=(128, 32), range="(0, inf)")
    device: str = hp("cpu", "torch device: cpu, or cuda if available (cpu is faster for networks this small)")


class ReplayBuffer:
    """Preallocated ring buffer of (s, a, r, terminated, s'), a in [-1, 1]: O(1) put, one gather per field to sample."""

    def __init__(self, capacity, obs_dim, act_dim):
        self.capacity, self.size, self.ptr = capacity, 0, 0
        self.fields = [torch.zeros(capacity, *shape) for shape in ((obs_dim,), (act_dim,), (), (), (obs_dim,))]
        self.views = [f.numpy() for f in self.fields]     # writes through NumPy: no tensor built per step

    def put(self, s, a, r, terminated, s_next):
        for view, x in zip(self.views, (s, a, r, terminated, s_next)):
            view[self.ptr] = x
        self.ptr, self.size = (self.ptr + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, n, device="cpu"):
        """-> s (n, obs_dim), a (n, D), r (n,), terminated (n,), s' (n, obs_dim), float32 on ``device``."""
        idx = torch.randint(self.size, (n,))
        return [f[idx].to(device) for f in self.fields]


def mlp(sizes):
    """Linear layers of the given sizes [in, hidden..., out] with ReLU between them."""
    layers = [m for n_in, n_out in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(n_in, n_out), nn.ReLU())]
    return nn.Sequential(*layers[:-1])


class PolicyNet(nn.Module):
    """Squashed Gaussian π(a|s) on [-1, 1]^D, and the env's action bias + scale·a (see the module docstring)."""

    def __init__(self, obs_dim, act_dim, hidden, low, high):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 2 * act_dim])        # -> μ and log σ
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        for name, x in dict(low=low, high=high, scale=(high - low) / 2, bias=(high + low) / 2).items():
            self.register_buffer(name, x)
        self.log_const = act_dim * (0.5 * math.log(2 * math.pi) + 2 * math.log(2))   # the constant part of −log π

    def forward(self, s):
        """(B, obs_dim) -> a ~ π(·|s) in [-1, 1] (B, D) reparameterised, log π(a|s) (B,)."""
        mu, log_std = self.net(s).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        eps = torch.randn_like(mu)
        u = mu + log_std.exp() * eps                          # u ~ N(μ, σ²)
        # log N(u; μ, σ) − log(1 − tanh² u), with log(1 − tanh² u) = 2(log 2 − u − softplus(−2u))
        log_prob = (-0.5 * eps.square() - log_std + 2 * (u + F.softplus(-2 * u))).sum(-1) - self.log_const
        return torch.tanh(u), log_prob

    @torch.no_grad()
    def act(self, s, deterministic=False):
        """Action for the env: bias + scale·tanh(u), u sampled or the mean μ; clamped against float rounding."""
        s = torch.as_tensor(s, dtype=torch.float32, device=self.low.device)      # a NumPy observation as well
        mu, log_std = self.net(s).chunk(2, dim=-1)
        u = mu if deterministic else mu + log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp() * torch.randn_like(mu)
        return (self.bias + self.scale * torch.tanh(u)).clamp(self.low, self.high)


class TwinQ(nn.Module):
    """The post's two critics Q_1(s, a), Q_2(s, a), each an MLP on [s, a], in one module. Speed trick: layer k holds
    both critics' weights (2, in, out) and runs them with one batched matmul. The plain version, two
    ``mlp([obs_dim + act_dim, *hidden, 1])`` networks, makes every update about 1.3x slower (measured)."""

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
            x = F.relu(x) if k < len(self.weights) - 1 else x
        return x.squeeze(-1)


def calc_target(pi, q_target, log_alpha, r, terminated, s_next, gamma):
    """y = r + γ·(1 − terminated)·(min_j Q'_j(s', a') − α·log π(a'|s')), a' ~ π(·|s'); shape (B,)."""
    with torch.no_grad():
        a_next, log_prob = pi(s_next)
        soft_q = q_target(s_next, a_next).min(0).values - log_alpha.exp() * log_prob
        return r + gamma * (1.0 - terminated) * soft_q


@torch.no_grad()
def soft_update(net, target, tau):
    """θ' ← θ' + τ·(θ − θ')."""
    for p_target, p in zip(target.parameters(), net.parameters()):
        p_target.lerp_(p, tau)


class SAC:
    """The networks, their optimizers, and ``train_net``: one gradient update of the critics, actor and α."""

    def __init__(self, obs_dim, act_dim, low, high, args):
        self.model_kwargs = dict(obs_dim=obs_dim, act_dim=act_dim, hidden=list(args.actor_hidden),
                                 low=[float(x) for x in low], high=[float(x) for x in high])
        dev, self.args = args.device, args
        self.pi = PolicyNet(**self.model_kwargs).to(dev)
        self.q = TwinQ(obs_dim, act_dim, args.critic_hidden).to(dev)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(args.init_alpha), device=dev, requires_grad=True)
        self.target_entropy = -act_dim if args.target_entropy is None else args.target_entropy
        # fused=True: PyTorch's one-kernel Adam (on the CPU since torch 2.4), the fastest for networks this small
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=args.lr_q, fused=True)
        self.pi_opt = torch.optim.Adam([{"params": self.pi.parameters(), "lr": args.lr_pi},
                                        {"params": [self.log_alpha], "lr": args.lr_alpha}], fused=True)
        self.actor_params = [*self.pi.parameters(), self.log_alpha]

    def train_net(self, batch):
        s, a, r, terminated, s_next = batch
        y = calc_target(self.pi, self.q_target, self.log_alpha, r, terminated, s_next, self.args.gamma)
        qf_loss = (self.q(s, a) - y).square().mean(1)              # (2,): the MSE of Q_1 and of Q_2
        finite = torch.isfinite(qf_loss).all()    # a nan/inf loss never reaches the weights: the caller stops
        if finite:
            self.q_opt.zero_grad()
            qf_loss.sum().backward()
            self.q_opt.step()
        a_pi, log_prob = self.pi(s)
        alpha = self.log_alpha.exp()
        actor_loss = (alpha.detach() * log_prob - self.q(s, a_pi).min(0).values).mean()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        if finite and torch.isfinite(actor_loss + alpha_loss):
            # Speed trick: gradients for the actor and log α only. The plain (actor_loss + alpha_loss).backward()
            # also computes the critics' weight gradients, unused here: about 1.2x slower updates (measured).
            for p, g in zip(self.actor_params, torch.autograd.grad(actor_loss + alpha_loss, self.actor_params)):
                p.grad = g
            self.pi_opt.step()
            soft_update(self.q, self.q_target, self.args.tau)
        return {k: v.detach() for k, v in dict(qf1_loss=qf_loss[0], qf2_loss=qf_loss[1], actor_loss=actor_loss,
                                               alpha_loss=alpha_loss, alpha=alpha).items()}


def train(args):
    env = common.make_env(args.env_id, False)
    if args.target_return is None and env.spec is not None and env.spec.id == "Pendulum-v1":   # no reward_threshold
        args.target_return, args.return_window = -200.0, args.return_window or 10         # the post's rule
    common.default_target(args, env)
    obs_dim, act_dim = common.spaces_of(env)
    agent = SAC(obs_dim, act_dim, env.action_space.low, env.action_space.high, args)
    bias, scale = agent.pi.bias.cpu().numpy(), agent.pi.scale.cpu().numpy()
    memory = ReplayBuffer(args.buffer_size, obs_dim, act_dim)
    log = common.Logger(args, "sac")                # the run folder: config.json, TensorBoard, progress lines

    s, _ = env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    step, updates, credit, solved = 0, 0, 0.0, False
    try:
        with common.graceful_stop():                # Ctrl-C/SIGTERM: stop_requested() turns true, the loop ends
            while step < args.total_timesteps and not solved and not common.stop_requested():
                a = env.action_space.sample() if step < args.random_steps else agent.pi.act(s).cpu().numpy()
                s_next, r, terminated, truncated, info = env.step(a)
                memory.put(s, (a - bias) / scale, r * args.reward_scale, terminated, s_next)   # a in [-1, 1]
                s, step = s_next, step + 1
                if terminated or truncated:
                    log.episode(info["episode"]["r"], info["episode"]["l"], step)
                    solved = common.solved(log, args)
                    s, _ = env.reset()
                if step >= args.learning_starts:
                    credit += args.utd_ratio                 # updates owed: utd_ratio per env step
                    while step % args.update_every == 0 and credit >= 1.0:
                        losses = agent.train_net(memory.sample(args.batch_size, args.device))
                        credit, updates = credit - 1.0, updates + 1
                        common.check_finite(updates, step, **losses)
                        if updates % 200 == 0:
                            log.scalars({f"losses/{k}": v.item() for k, v in losses.items()}
                                        | {"charts/updates_per_s": updates / (time.time() - log.start)}, step)
    finally:                                        # whatever ended the loop, an error too: save model.pt
        env.close()
        print(f"{updates} gradient updates, {updates / max(time.time() - log.start, 1e-9):.0f} updates/s")
        common.finish(log, step, agent.pi, agent.model_kwargs, solved)
    return agent, log


def check_device(device):
    """--device: cpu, or cuda where this torch build and machine have it; else one line."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise common.UsageError(f"--device: unknown device '{device}' (use cpu or cuda)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise common.UsageError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                                f"cuda build: {torch.version.cuda}); use --device cpu")


@common.command   # one-line errors, Ctrl-C saves: on the command line and in a notebook
def main(argv=None):
    args = common.parse_args(Args, __doc__, argv)
    common.prepare(args, discrete=False)   # seeds; --render/--video fail now, not after training
    check_device(args.device)
    if not args.load:
        _, log = train(args)
        if not (args.render or args.video):
            return
        args.load = log.model_path    # watch the model as saved
    saved = common.load_model(args.load, "sac", args)
    pi = PolicyNet(**saved["model_kwargs"]).to(args.device)
    pi.load_state_dict(saved["state_dict"])       # evaluation plays the mean action bias + scale·tanh(μ)
    common.evaluate(args, False, lambda obs: pi.act(obs, deterministic=True).cpu().numpy(), saved)


if __name__ == "__main__":
    main()
