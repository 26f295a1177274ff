"""Tests for sac.py: the maths (log-prob, TD target, soft update, α), the buffer, short runs and the CLI."""
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import common  # noqa: E402
import sac  # noqa: E402

LOW, HIGH = [-1.0, 0.0, -3.0], [2.0, 0.5, -1.0]       # asymmetric bounds, 3 action dims


def args_for(*argv):
    return common.parse_args(sac.Args, "", ["--print-interval", "1000", *argv])


def test_log_prob_is_the_density_of_the_squashed_action():
    """log π(a|s) of a = tanh(u) in [-1, 1], whatever the env's box (the bounds only scale the env's action)."""
    torch.manual_seed(0)
    pi = sac.PolicyNet(obs_dim=4, act_dim=3, hidden=[16], low=LOW, high=HIGH).double()
    s = torch.randn(64, 4, dtype=torch.float64) * 3
    torch.manual_seed(1)
    a, log_prob = pi(s)
    torch.manual_seed(1)
    eps = torch.randn(64, 3, dtype=torch.float64)      # the same noise the forward pass drew

    # Independently: u ~ N(μ, σ²) with torch.distributions, a = tanh(u), log π(a) = log N(u) − log|det ∂a/∂u|.
    mu, log_std = pi.net(s).chunk(2, dim=-1)
    std = log_std.clamp(sac.LOG_STD_MIN, sac.LOG_STD_MAX).exp()
    u = mu + std * eps
    expected = []
    for i in range(64):
        jac = torch.autograd.functional.jacobian(torch.tanh, u[i].detach())
        log_det = torch.linalg.slogdet(jac).logabsdet
        expected.append(torch.distributions.Normal(mu[i], std[i]).log_prob(u[i]).sum() - log_det)
    torch.testing.assert_close(a, torch.tanh(u))
    torch.testing.assert_close(log_prob, torch.stack(expected), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("low, high", [([-2.0], [2.0]), ([0.1], [0.7]), ([-0.05], [0.05])])
def test_the_density_of_sampled_actions_matches_exp_log_prob(low, high):
    """Monte Carlo: a histogram of 400k sampled actions against exp(log π(a|s)) in each bin. On every box, a is the
    squashed action in [-1, 1] and log π its density there (the env's scale and bias are not part of it)."""
    torch.manual_seed(0)
    pi = sac.PolicyNet(obs_dim=1, act_dim=1, hidden=[4], low=low, high=high).double()
    with torch.no_grad():
        pi.net[-1].weight.zero_()
        pi.net[-1].bias.copy_(torch.tensor([0.4, math.log(0.8)], dtype=torch.float64))   # μ = 0.4, σ = 0.8
        a, log_prob = pi(torch.zeros(400_000, 1, dtype=torch.float64))
    assert (a.abs() <= 1).all()
    edges = torch.linspace(-1, 1, 41, dtype=torch.float64)
    bins = torch.bucketize(a[:, 0], edges[1:-1])
    counts = torch.bincount(bins, minlength=40).double()
    histogram = counts / (len(a) * (edges[1] - edges[0]))                # the sampled density per bin
    density = torch.zeros(40, dtype=torch.float64).index_add_(0, bins, log_prob.exp()) / counts.clamp(min=1)
    inner = counts > 2000                  # bins with enough samples, away from ±1 where the density is steepest
    inner[:2] = inner[-2:] = False
    assert inner.sum() >= 30
    torch.testing.assert_close(histogram[inner], density[inner], rtol=0.05, atol=0.0)


def test_log_prob_is_finite_when_tanh_saturates():
    pi = sac.PolicyNet(obs_dim=2, act_dim=3, hidden=[8], low=LOW, high=HIGH)
    with torch.no_grad():
        pi.net[-1].bias.copy_(torch.tensor([30.0, -30.0, 30.0, 0.0, 0.0, 0.0]))   # μ = ±30: tanh(u) = ±1 in float32
    a, log_prob = pi(torch.randn(100, 2))
    assert torch.isfinite(log_prob).all()


@pytest.mark.parametrize("low,high", [(LOW, HIGH), ([0.1, -0.7], [0.7, -0.3])])
def test_sampled_actions_lie_inside_the_bounds(low, high):
    torch.manual_seed(0)
    pi = sac.PolicyNet(obs_dim=2, act_dim=len(low), hidden=[8], low=low, high=high)
    with torch.no_grad():
        for p in pi.parameters():
            p.mul_(50)                                  # push most actions to the edges of the box
    s = torch.randn(2000, 2)
    lo, hi = torch.tensor(low), torch.tensor(high)
    for a in (pi.act(s), pi.act(s, deterministic=True), pi.act(s[0])):
        assert ((a >= lo) & (a <= hi)).all()
    assert (pi.act(s) == hi).any() and (pi.act(s) == lo).any()
    a, _ = pi(s)                                        # the training path: a in [-1, 1]
    assert (a.abs() <= 1).all() and (a.abs() == 1).any()


def test_td_target_bootstraps_truncated_but_not_terminated_transitions():
    log_alpha = torch.tensor(math.log(0.5))
    a_next, log_prob_next = torch.tensor([[0.3], [0.1], [-0.2]]), torch.tensor([-1.0, 0.5, 2.0])
    q_next = torch.tensor([[10.0, 4.0, -1.0], [8.0, 6.0, -3.0]])   # (2, B): min is [8, 4, -3]

    def pi(s):
        return a_next, log_prob_next

    def q_target(s, a):
        assert torch.equal(a, a_next)
        return q_next

    r = torch.tensor([1.0, 2.0, 3.0])
    terminated = torch.tensor([1.0, 0.0, 0.0])   # row 0 terminated; row 1 is a truncated episode end; row 2 mid-episode
    y = sac.calc_target(pi, q_target, log_alpha, r, terminated, torch.zeros(3, 2), gamma=0.9)
    expected = torch.tensor([1.0,                                  # terminated: no bootstrap
                             2.0 + 0.9 * (4.0 - 0.5 * 0.5),        # truncated: bootstrapped like any other
                             3.0 + 0.9 * (-3.0 - 0.5 * 2.0)])
    torch.testing.assert_close(y, expected)


def test_soft_update_moves_targets_by_exactly_tau():
    torch.manual_seed(0)
    q, q_target = sac.TwinQ(3, 2, [8, 8]), sac.TwinQ(3, 2, [8, 8])
    before = [p.detach().clone() for p in q_target.parameters()]
    sac.soft_update(q, q_target, 0.25)
    for p_new, p_old, p in zip(q_target.parameters(), before, q.parameters()):
        torch.testing.assert_close(p_new, p_old + 0.25 * (p - p_old), rtol=0, atol=1e-6)


def test_twin_q_networks_are_independent():
    torch.manual_seed(0)
    q = sac.TwinQ(3, 2, [8])
    s, a = torch.randn(5, 3), torch.randn(5, 2)
    out = q(s, a)
    assert out.shape == (2, 5)
    for j in range(2):                                  # critic j is an ordinary MLP with layer weights [j]
        h = torch.relu(torch.cat([s, a], 1) @ q.weights[0][j] + q.biases[0][j])
        torch.testing.assert_close(out[j], (h @ q.weights[1][j] + q.biases[1][j]).squeeze(-1))


@pytest.mark.parametrize("target_entropy,direction", [(100.0, +1), (-100.0, -1)])
def test_alpha_moves_towards_the_target_entropy(target_entropy, direction):
    # H̄ = +100: the policy's entropy −log π is below the target, so α must grow; H̄ = −100: α must shrink.
    torch.manual_seed(0)
    agent = sac.SAC(3, 2, [-1.0, 0.0], [1.0, 2.0], args_for("--target-entropy", str(target_entropy)))
    memory = sac.ReplayBuffer(100, 3, 2)
    for _ in range(100):
        memory.put(np.random.randn(3), np.random.rand(2), np.random.randn(), 0.0, np.random.randn(3))
    for _ in range(3):
        before = agent.log_alpha.item()
        alpha = agent.train_net(memory.sample(32))["alpha"]
        assert math.copysign(1, agent.log_alpha.item() - before) == direction
        assert alpha.item() == pytest.approx(math.exp(before))


def test_buffer_wraps_around_and_samples_float32_batches():
    memory = sac.ReplayBuffer(5, obs_dim=2, act_dim=3)
    for i in range(7):
        memory.put(np.full(2, i), np.full(3, -i), 10.0 * i, i % 2, np.full(2, i + 0.5))
    assert memory.size == 5 and memory.ptr == 2
    s, a, r, term, s_next = memory.fields
    np.testing.assert_array_equal(s[:, 0].numpy(), [5, 6, 2, 3, 4])   # 5 and 6 overwrote the oldest rows
    np.testing.assert_array_equal(r.numpy(), [50, 60, 20, 30, 40])
    np.testing.assert_array_equal(s_next[:, 1].numpy(), [5.5, 6.5, 2.5, 3.5, 4.5])
    batch = memory.sample(64)
    assert [tuple(x.shape) for x in batch] == [(64, 2), (64, 3), (64,), (64,), (64, 2)]
    assert all(x.dtype == torch.float32 for x in batch)
    s, a, r, term, s_next = batch
    torch.testing.assert_close(a, -s[:, :1].expand(-1, 3))     # rows stay whole
    torch.testing.assert_close(r, 10 * s[:, 0])
    torch.testing.assert_close(term, s[:, 0] % 2)
    small = sac.ReplayBuffer(100, 1, 1)
    for i in range(3):
        small.put([i], [0.0], 0.0, 0.0, [0.0])
    assert set(small.sample(200)[0][:, 0].tolist()) == {0.0, 1.0, 2.0}   # only filled rows are sampled


class ReachEnv(gym.Env):
    """3-D observation, 2-D action with asymmetric bounds; reward −|a − a*|²; terminates when obs[0] > 1.2."""

    observation_space = gym.spaces.Box(-5.0, 5.0, (3,), np.float32)
    action_space = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([3.0, 0.5], np.float32))
    target = np.array([2.0, 0.15])

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.obs, {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, np.float32)), action
        reward = -float(np.sum((action - self.target) ** 2))
        self.obs = self.np_random.uniform(-1, 1.25, 3).astype(np.float32)
        return self.obs, reward, bool(self.obs[0] > 1.2), False, {}


gym.register("SacTestReach-v0", entry_point=ReachEnv, max_episode_steps=20)


class Recorder(sac.ReplayBuffer):
    last = None

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        Recorder.last = self


def test_multi_dimensional_box_env_with_asymmetric_bounds(tmp_path, monkeypatch):
    monkeypatch.setattr(sac, "ReplayBuffer", Recorder)
    args = args_for("--env-id", "SacTestReach-v0", "--total-timesteps", "1500", "--learning-starts", "200",
                    "--random-steps", "200", "--gamma", "0", "--logdir", str(tmp_path))
    common.seed_everything(args.seed)
    agent, log = sac.train(args)
    mean_action = agent.pi.act(torch.zeros(3), deterministic=True).numpy()
    np.testing.assert_allclose(mean_action, ReachEnv.target, atol=0.3)      # found a* inside the box
    memory = Recorder.last
    term = memory.fields[3][:memory.size].numpy()
    s_next0 = memory.fields[4][:memory.size, 0].numpy()
    np.testing.assert_array_equal(term, s_next0 > 1.2)   # terminated flags are stored as the env gave them


def test_pendulum_learns_and_truncation_is_not_termination(tmp_path, monkeypatch):
    monkeypatch.setattr(sac, "ReplayBuffer", Recorder)
    args = args_for("--total-timesteps", "4000", "--keep-training", "--logdir", str(tmp_path))
    common.seed_everything(args.seed)
    _, log = sac.train(args)
    assert log.episodes == 20
    assert np.mean(list(log.returns)[-5:]) > -700       # random play scores about −1200 per episode
    memory = Recorder.last
    assert memory.fields[3][:memory.size].sum() == 0   # every episode end was a truncation


def run_cli(*argv):
    return subprocess.run([sys.executable, str(ROOT / "sac.py"), *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        sac.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--utd-ratio", "--learning-starts", "--random-steps", "--actor-hidden", "--device", "--load"):
        assert flag in out


def test_discrete_env_is_a_one_line_error():
    p = run_cli("--env-id", "CartPole-v1", "--logdir", "/nonexistent")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "continuous (Box) action space" in lines[0]


def test_unavailable_device_is_a_usage_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(common.UsageError, match="CUDA is not available"):
        sac.main(["--device", "cuda"])
    with pytest.raises(common.UsageError, match="--device"):
        sac.main(["--device", "nonsense"])


def test_save_then_load_evaluates_the_mean_action(tmp_path, capsys):
    sac.main(["--total-timesteps", "400", "--learning-starts", "200", "--random-steps", "200",
              "--logdir", str(tmp_path), "--print-interval", "1000"])
    out = capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "model.pt").is_file() and "after 400 env steps" in out
    sac.main(["--load", str(run_dir), "--eval-episodes", "2"])
    out = capsys.readouterr().out
    assert out.count("eval episode") == 2 and "mean return over 2 episodes" in out
    saved = common.load_model(str(run_dir), "sac")
    pi = sac.PolicyNet(**saved["model_kwargs"])
    pi.load_state_dict(saved["state_dict"])
    s = torch.randn(5, 3)
    torch.testing.assert_close(pi.act(s, deterministic=True), 2.0 * torch.tanh(pi.net(s)[:, :1]).detach())
    with pytest.raises(common.UsageError):
        sac.main(["--load", str(run_dir), "--env-id", "MountainCarContinuous-v0"])   # 2-D obs, not 3-D


def test_same_seed_gives_identical_returns(tmp_path):
    runs = []
    for _ in range(2):
        args = args_for("--total-timesteps", "1200", "--learning-starts", "300", "--random-steps", "300",
                        "--seed", "7", "--logdir", str(tmp_path))
        common.seed_everything(args.seed)
        _, log = sac.train(args)
        runs.append(list(log.returns))
    assert len(runs[0]) == 6 and runs[0] == runs[1]


def test_a_tiny_action_box_keeps_alpha_bounded_and_learns(tmp_path):
    """A box of ±0.05 per dimension (joint velocities, small torques): measured in the env's units its entropy could
    never reach −dim(A), α would grow without bound and drown the reward. On [-1, 1] it stays bounded and the mean
    action finds a* = (0.03, −0.02)."""
    args = args_for("--env-id", "tests.envs:TinyBox-v0", "--total-timesteps", "3000", "--learning-starts", "300",
                    "--random-steps", "300", "--gamma", "0", "--logdir", str(tmp_path))
    common.seed_everything(args.seed)
    agent, log = sac.train(args)
    assert agent.log_alpha.exp().item() < 0.2                       # it started at 0.1
    mean_action = agent.pi.act(torch.zeros(3), deterministic=True).numpy()
    np.testing.assert_allclose(mean_action, [0.03, -0.02], atol=0.006)
    assert np.mean(list(log.returns)[-10:]) > -5                    # random play: about −27 per episode
