"""a3c.py: n-step targets, one gradient per update, the shared optimizer, and whole runs as a user starts them
(2 workers with spawn, a failing worker, Ctrl-C to the process group, the CLI): no process may be left behind."""
import glob
import multiprocessing
import os
import queue
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import gymnasium as gym
import pytest
import torch
import torch.nn.functional as F

import a3c
import common
from a3c import ActorCritic
from conftest import ROOT, assert_no_process_left, assert_one_line_error, parse, run_script
from tests.envs import CounterEnv


# ------------------------------------------------------------------------------------------ n-step targets
@pytest.mark.parametrize("terminated, bootstrap, expected", [
    (True, 4.0, [2.75, 3.5, 3.0]),    # ended by termination: V(s_n) is ignored, y_2 = r_2
    (False, 4.0, [3.25, 4.5, 5.0]),   # ended by truncation (real last s'): y_2 = r_2 + γ·V(s_n)
    (False, -2.0, [2.5, 3.0, 2.0]),   # cut mid-episode after update_interval steps: same rule
])
def test_n_step_targets_by_hand(terminated, bootstrap, expected):
    y = a3c.n_step_targets([1.0, 2.0, 3.0], bootstrap, terminated, 0.5)
    assert y.dtype == torch.float32 and y.tolist() == pytest.approx(expected)


def test_loss_bootstraps_from_the_last_state_of_the_rollout():
    torch.manual_seed(0)
    model = ActorCritic(4, 2, hidden=8)
    s, a, r = torch.randn(4, 4), torch.tensor([0, 1, 1]), [0.01, 0.01, 0.01]
    for terminated in (False, True):
        _, pl, vl, _ = a3c.a3c_loss(model, s, a, r, terminated, 0.9)
        with torch.no_grad():
            logits, v = model(s)
            y = a3c.n_step_targets(r, v[3], terminated, 0.9)
            log_pi_a = F.log_softmax(logits[:3], -1)[torch.arange(3), a]
        assert pl.item() == pytest.approx(-(log_pi_a * (y - v[:3])).mean().item(), rel=1e-5)
        assert vl.item() == pytest.approx(F.smooth_l1_loss(v[:3], y).item(), rel=1e-5)


def test_every_env_step_weighs_one_over_t_max_whatever_the_rollouts_length():
    """Per step: ℓ_t = −log π(a_t|s_t)·A_t + smooth_l1(V(s_t), y_t) − β·H_t. A rollout of n steps has loss Σ_t ℓ_t / t_max:
    a 1-step stub at an episode's end counts 1/20 of a full 20-step rollout's mean, not as much as all of it."""
    torch.manual_seed(0)
    model = ActorCritic(4, 2, hidden=8)
    s, a, r = torch.randn(21, 4), torch.randint(0, 2, (20,)), [0.01 * (i % 3) for i in range(20)]
    with torch.no_grad():
        logits, v = model(s)
        y = a3c.n_step_targets(r, v[20], False, 0.9)
        log_pi = F.log_softmax(logits[:20], -1)
        per_step = (-log_pi[torch.arange(20), a] * (y - v[:20]) + F.smooth_l1_loss(v[:20], y, reduction="none")
                    - 0.05 * -(log_pi.exp() * log_pi).sum(-1))
    full, *_ = a3c.a3c_loss(model, s, a, r, False, 0.9, ent_coef=0.05, t_max=20)
    assert full.item() == pytest.approx(per_step.mean().item(), rel=1e-5)       # a full rollout: the mean
    stub_s = torch.stack([s[0], s[1]])                                          # one step, bootstrapping from s_1
    stub, *_ = a3c.a3c_loss(model, stub_s, a[:1], r[:1], False, 0.9, ent_coef=0.05, t_max=20)
    with torch.no_grad():
        y0 = r[0] + 0.9 * v[1]
        l0 = (-log_pi[0, a[0]] * (y0 - v[0]) + F.smooth_l1_loss(v[0], y0) + 0.05 * (log_pi[0].exp() * log_pi[0]).sum())
    assert stub.item() == pytest.approx(l0.item() / 20, rel=1e-5)


def test_gradient_clipping_bounds_what_a_worker_pushes():
    torch.manual_seed(0)
    global_model, local_model = ActorCritic(4, 2, hidden=16).share_memory(), ActorCritic(4, 2, hidden=16)
    pull_weights(local_model, global_model)
    s, a, r = rollout()
    opt = torch.optim.SGD(global_model.parameters(), lr=0.0)
    a3c.update_global(local_model, global_model, opt, s, a, [100.0] * 5, False, ARGS)
    unclipped = torch.cat([p.grad.flatten() for p in global_model.parameters()]).norm()
    a3c.update_global(local_model, global_model, opt, s, a, [100.0] * 5, False,
                      SimpleNamespace(**{**vars(ARGS), "max_grad_norm": 0.5}))
    clipped = torch.cat([p.grad.flatten() for p in global_model.parameters()]).norm()
    assert unclipped > 1.0 and clipped.item() == pytest.approx(0.5, rel=1e-4)


def test_numpy_sampling_follows_the_torch_policy():
    torch.manual_seed(0)
    model = ActorCritic(4, 3, hidden=16)
    with torch.no_grad():
        model.fc_pi.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    weights = [p.detach().numpy() for p in (model.fc1.weight, model.fc1.bias, model.fc_pi.weight, model.fc_pi.bias)]
    s, rng = torch.randn(4), random.Random(0)
    probs = F.softmax(model.pi(s), -1).tolist()
    counts = [0, 0, 0]
    for _ in range(20000):
        counts[a3c.sample_action(*weights, s.numpy(), rng)] += 1
    assert [c / 20000 for c in counts] == pytest.approx(probs, abs=0.015)
    with torch.no_grad():   # the views follow in-place weight copies (update_global)
        model.fc_pi.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
    assert a3c.sample_action(*weights, s.numpy(), rng) == 2


# ------------------------------------------------------------------------------ one gradient per update
ARGS = SimpleNamespace(gamma=0.99, ent_coef=0.0, update_interval=5, max_grad_norm=0.0)


def pull_weights(local_model, global_model):
    local_model.load_state_dict(global_model.state_dict())


def rollout():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 4, generator=g), torch.tensor([0, 1, 1, 0, 1]), [0.01] * 5


def test_each_update_pushes_its_gradient_exactly_once():
    """Plain SGD: the parameter change is −lr·g of that update alone. The posts' code on PyTorch 2 pushes
    g, then 2g, then 3g... (the local grads are never zeroed)."""
    torch.manual_seed(0)
    global_model = ActorCritic(4, 2, hidden=16).share_memory()
    gparams = list(global_model.parameters())
    start = [p.detach().clone() for p in gparams]
    local_model = ActorCritic(4, 2, hidden=16)
    pull_weights(local_model, global_model)
    opt = torch.optim.SGD(gparams, lr=0.1)
    s, a, r = rollout()

    pushed = []
    for _ in range(3):   # the same rollout on the same weights three times
        with torch.no_grad():
            for p, p0 in zip(gparams, start):
                p.copy_(p0)
        pull_weights(local_model, global_model)
        a3c.update_global(local_model, global_model, opt, s, a, r, False, ARGS)
        pushed.append([p.grad.clone() for p in gparams])
        for p, p0, g in zip(gparams, start, pushed[-1]):
            assert torch.allclose(p.detach(), p0 - 0.1 * g, atol=1e-6)       # the global model changed by −lr·g
        for lp, gp in zip(local_model.parameters(), gparams):
            assert torch.equal(lp.detach(), gp.detach())                    # ... and the local copy followed
    assert any(g.abs().sum() > 0 for g in pushed[0])
    for later in pushed[1:]:
        for g0, g in zip(pushed[0], later):
            assert torch.allclose(g, g0, atol=1e-7)                          # not 2g, 3g


def test_shared_adam_is_adam_with_its_state_in_shared_memory():
    torch.manual_seed(0)
    model, reference = ActorCritic(4, 2, hidden=16).share_memory(), ActorCritic(4, 2, hidden=16)
    reference.load_state_dict(model.state_dict())
    opt, ref_opt = a3c.SharedAdam(model.parameters(), lr=1e-2), torch.optim.Adam(reference.parameters(), lr=1e-2)
    state = [opt.steps, *opt.exp_avg, *opt.exp_avg_sq]
    assert all(t.is_shared() for t in state)
    local = ActorCritic(4, 2, hidden=16)
    pull_weights(local, model)
    s, a, r = rollout()
    for _ in range(3):
        a3c.update_global(local, model, opt, s, a, r, True, ARGS)
        ref_opt.zero_grad()
        a3c.a3c_loss(reference, s, a, r, True, ARGS.gamma)[0].backward()
        ref_opt.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert [id(t) for t in [opt.steps, *opt.exp_avg, *opt.exp_avg_sq]] == [id(t) for t in state]  # in place
    assert opt.steps.item() == 3


# ------------------------------------------------------------------------------------- the worker loop
def run_workers(monkeypatch, env_id, *argv, workers=1, steps_each=30):
    """Run ``train_worker`` in this process for each rank in turn, all on one global model and one SharedAdam,
    recording every rollout it hands to ``update_global``. Returns (rollouts, queued messages, optimizer)."""
    args = parse(a3c, "--env-id", env_id, "--hidden", "8", *argv)
    kwargs = dict(obs_dim=1, n_actions=2, hidden=8)
    global_model = ActorCritic(**kwargs).share_memory()
    optimizer = a3c.SharedAdam(global_model.parameters(), lr=1e-3)
    rollouts, real_update = [], a3c.update_global

    def spy(local_model, model, opt, s, a, rewards, terminated, args):
        rollouts.append((s[:, 0].tolist(), list(rewards), terminated))
        return real_update(local_model, model, opt, s, a, rewards, terminated, args)
    monkeypatch.setattr(a3c, "update_global", spy)
    counter, msgs = multiprocessing.Value("q", 0), queue.Queue()
    for rank in range(workers):
        args.total_timesteps = steps_each * (rank + 1)
        a3c.worker(rank, args, kwargs, global_model, optimizer, counter, multiprocessing.Event(), msgs)
    return rollouts, [msgs.get() for _ in range(msgs.qsize())], optimizer


@pytest.fixture(scope="module")
def counter_envs():
    gym.register("A3CTestTruncated-v0", entry_point=lambda **kw: CounterEnv(None, **kw), max_episode_steps=3)
    gym.register("A3CTestTerminated-v0", entry_point=lambda **kw: CounterEnv(3, **kw), max_episode_steps=10)


def test_a_truncated_rollout_bootstraps_from_the_real_last_observation(monkeypatch, counter_envs):
    rollouts, msgs, _ = run_workers(monkeypatch, "A3CTestTruncated-v0", "--update-interval", "5")
    for states, rewards, terminated in rollouts:
        assert states == [0.0, 1.0, 2.0, 3.0] and not terminated   # s_n = 3 (not the reset 0), bootstrapped
    episodes = [m for m in msgs if m[0] == "episode"]
    assert len(episodes) == len(rollouts) >= 10                       # the episode ends on truncation
    assert all(m[2:4] == (3.0, 3) for m in episodes)


def test_a_terminated_rollout_does_not_bootstrap_and_a_cut_one_does(monkeypatch, counter_envs):
    rollouts, _, _ = run_workers(monkeypatch, "A3CTestTerminated-v0", "--update-interval", "2")
    assert rollouts[0] == ([0.0, 1.0, 2.0], [0.01, 0.01], False)      # cut after 2 steps: bootstraps from V(2)
    assert rollouts[1] == ([2.0, 3.0], [0.01], True)                  # ended by termination: no bootstrap
    assert rollouts[2][0][0] == 0.0                                   # then a fresh episode


def test_every_update_of_the_worker_loop_is_one_optimizer_step(monkeypatch, counter_envs):
    rollouts, _, optimizer = run_workers(monkeypatch, "A3CTestTruncated-v0", "--update-interval", "5", workers=2)
    assert optimizer.steps.item() == len(rollouts) >= 20


def test_worker_processes_step_one_adam_state(monkeypatch):
    """Post 001's bug: one Adam per worker (the post builds its optimizer inside the worker), so each process steps
    private moments. Run in this process, ranks one after the other would still share even private copies: here
    two real worker processes (fork: they inherit the spy) record every gradient they push, in the order the
    updates are applied; one torch Adam fed the same gradients must hold the shared step count and moments."""
    ctx, kwargs = multiprocessing.get_context("fork"), dict(obs_dim=1, n_actions=2, hidden=8)
    args = parse(a3c, "--env-id", "TestCounter-v0", "--hidden", "8", "--total-timesteps", "60")   # 3-step episodes
    global_model = ActorCritic(**kwargs).share_memory()
    params = list(global_model.parameters())
    optimizer = a3c.SharedAdam(params, lr=1e-3, lock=ctx.Lock())
    pushed, applied = torch.zeros(64, sum(p.numel() for p in params)).share_memory_(), ctx.Value("i", 0)
    both_started, real_update, started = ctx.Barrier(2, timeout=30), a3c.update_global, []

    def spy(local_model, model, opt, *rollout):
        if not started:             # each worker's first update waits for the other's: both take part
            started.append(both_started.wait())
        with applied.get_lock():    # one update at a time, recorded in the order applied
            stats = real_update(local_model, model, opt, *rollout)
            pushed[applied.value] = torch.cat([p.grad.flatten() for p in model.parameters()])
            applied.value += 1
        return stats
    monkeypatch.setattr(a3c, "update_global", spy)
    workers = a3c.Workers(ctx, 2, a3c.worker, (args, kwargs, global_model, optimizer, ctx.Value("q", 0)))
    msgs = []
    while not workers.stop.is_set():
        msgs += workers.messages(timeout=0.1)
    errors = [m for m in msgs + workers.stop_all() if m[0] == "error"]
    assert not errors, errors

    replayed = [torch.zeros_like(p, requires_grad=True) for p in params]
    reference = torch.optim.Adam(replayed)
    for row in pushed[:applied.value]:
        for p, g in zip(replayed, row.split([p.numel() for p in params])):
            p.grad = g.view_as(p)
        reference.step()
    state = [reference.state[p] for p in replayed]
    assert optimizer.steps.item() == applied.value >= 20 and state[0]["step"] == applied.value
    torch.testing.assert_close(optimizer.exp_avg, [s["exp_avg"] for s in state], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(optimizer.exp_avg_sq, [s["exp_avg_sq"] for s in state], rtol=1e-5, atol=1e-9)


def test_the_advantage_is_a_constant_for_the_policy_loss(monkeypatch):
    torch.manual_seed(0)
    model = ActorCritic(4, 2, hidden=8)
    s, a, r = rollout()
    monkeypatch.setattr(a3c.F, "smooth_l1_loss", lambda v, y, **kw: (v * 0).sum())   # keep only the policy loss
    loss, *_ = a3c.a3c_loss(model, s, a, r, False, 0.9)
    loss.backward()
    assert model.fc_pi.weight.grad.abs().sum() > 0
    assert model.fc_v.weight.grad.abs().sum() == 0 and model.fc_v.bias.grad.abs().sum() == 0   # no grad via A


# ----------------------------------------------------------------------------------------- whole runs
def run_a3c(*args, timeout=90, **env):
    """Run a3c.py with a unique marker in its environment; afterwards no process may still carry it."""
    marker = uuid.uuid4().hex
    proc = run_script("a3c.py", *args, timeout=timeout, env={"A3C_TEST_MARKER": marker, **env})
    assert_no_process_left(marker)
    return proc


def test_two_spawned_workers_train_log_and_leave_nothing_behind(tmp_path):
    proc = run_a3c("--num-workers", "2", "--start-method", "spawn", "--total-timesteps", "3000", "--seed", "3",
                   "--print-interval", "10", "--logdir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert re.search(r"reached --total-timesteps after (\d+) env steps", proc.stdout)
    assert len(re.findall(r"# of episode: \d+, avg score", proc.stdout)) >= 5
    (run,) = glob.glob(os.path.join(tmp_path, "CartPole-v1__a3c__3__*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(run).Reload()
    returns = events.Scalars("charts/episodic_return")
    assert len(returns) >= 50 and all(e.value >= 8 for e in returns)
    assert {"charts/episodic_length", "charts/SPS"} <= set(events.Tags()["scalars"])
    assert max(e.step for e in returns) <= 3000 + 2 * a3c.Args.update_interval
    evaluation = run_script("a3c.py", "--load", run, "--eval-episodes", "2")
    assert evaluation.returncode == 0, evaluation.stderr
    assert len(re.findall(r"eval episode \d: return", evaluation.stdout)) == 2


def test_a_failing_worker_stops_the_run_with_its_error(tmp_path):
    proc = run_a3c("--num-workers", "2", "--total-timesteps", "1000000", "--logdir", tmp_path,
                   "--env-id", "tests.envs:TestCrash-v0")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(r"worker [01] failed: RuntimeError: the env crashed at step 300", lines[0]), \
        proc.stderr
    assert "Traceback" not in proc.stdout
    (log,) = glob.glob(os.path.join(tmp_path, "*", "worker_error.log"))
    assert "Traceback" in open(log).read()


def test_ctrl_c_to_the_process_group_stops_everything_and_saves(tmp_path):
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["A3C_TEST_MARKER"] = marker
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "a3c.py"), "--num-workers", "2", "--keep-training",
                             "--total-timesteps", "100000000", "--print-interval", "5", "--logdir", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        for line in proc.stdout:    # training has really started
            if line.startswith("# of episode"):
                break
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGINT)   # what a terminal does: every process of the group gets it
        out, err = proc.communicate(timeout=30)
        assert time.time() - t0 < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err and "interrupted" in out
    (model_path,) = glob.glob(os.path.join(tmp_path, "*", "model.pt"))
    assert common.load_model(model_path, "a3c")["env_id"] == "CartPole-v1"
    assert_no_process_left(marker)


# --------------------------------------------------------------------------------------------------- CLI
def test_help_documents_the_flags():
    proc = run_script("a3c.py", "--help")
    assert proc.returncode == 0
    for flag in ("--env-id", "--seed", "--total-timesteps", "--learning-rate", "--gamma", "--num-workers",
                 "--update-interval", "--start-method", "--logdir", "--load", "--eval-episodes", "--render",
                 "--video", "--keep-training"):
        assert flag in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--env-id", "NoSuchEnv-v0"], "unknown environment"),
    (["--env-id", "Pendulum-v1"], "Discrete action space"),
    (["--num-workers", "0"], "positive"),
    (["--load", "does/not/exist.pt"], "no such file"),
])
def test_bad_input_is_one_clear_line(args, fragment, tmp_path):
    proc = run_a3c(*args, "--logdir", tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, fragment)
