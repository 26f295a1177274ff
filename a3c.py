"""A3C (Asynchronous Advantage Actor-Critic) with torch.multiprocessing, for a Box observation and Discrete actions.

The posts' minimalRL ``a3c.py``, made correct on PyTorch 2 and Gymnasium. A global actor-critic lives in shared
memory; ``--num-workers`` processes each keep a local copy, play ``--update-interval`` steps (fewer if the episode
ends), and for every step t of that rollout of length n compute the n-step TD target backwards

    R_n = 0 if the rollout ended by termination, else V(s_n)   (a truncated end bootstraps from its real last s')
    y_t = r_t + γ·y_{t+1}  (y_n = R_n)      advantage A_t = y_t − V(s_t), a constant (detached)
    loss L = mean_t[ −log π(a_t|s_t)·A_t ] + smooth_l1(V(s_t), y_t) − β·mean_t H[π(·|s_t)]

then write dL/dθ_local into the global parameters' gradients (exactly once: fresh tensors every update), take one
step of an Adam whose moments and step count are shared by all workers, and copy the global weights back.
Nobody waits for anybody: that is the "asynchronous". The main process only aggregates: it reads finished
episodes from a queue, writes TensorBoard and the progress line, and sets the stop event when --total-timesteps
or the target return is reached, on Ctrl-C, or when a worker fails.

Shapes in a worker: s (n+1, obs_dim) with s_n the bootstrap state; a, r, y, A (n,); policy logits (n+1, n_actions).
"""
import contextlib
import math
import multiprocessing
import os
import queue as queue_lib
import random
import signal
import sys
import time
import traceback

import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import common
from actor_critic import ActorCritic, load_for_eval, watch

# Hyperparameters (the post's value in brackets; README explains each change)
learning_rate = 0.001    # [0.0002] measured: 5x solves CartPole in about half the env steps (2e-3 collapses)
update_interval = 20     # [5] steps per rollout (fewer when the episode ends); 4x fewer updates per env step
gamma = 0.99             # [0.98] a longer horizon: about 2x fewer env steps to solve CartPole-v1
hidden = 256             # [256] units in the hidden layer
reward_scale = 0.01      # [r/100.0]
ent_coef = 0.01          # [0] entropy bonus β (the A3C paper's 0.01): keeps π from collapsing onto one action
num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # [mp.cpu_count()]
# How worker processes start [Python's default: fork on Linux, spawn on macOS/Windows]. fork starts 2 workers in
# ~0.3 s; spawn and forkserver import torch again in each (~2-5 s on a busy 2-core machine). Both work: the
# workers get everything through picklable arguments and ignore the parent's state.
start_method = "fork" if sys.platform.startswith("linux") else "spawn"

LOSS_EVERY = 100         # updates between the loss statistics a worker sends to the main process


# ----------------------------------------------------------------------------------------------
# The algorithm: pure functions and the shared optimizer
# ----------------------------------------------------------------------------------------------
def n_step_targets(rewards, bootstrap_value, terminated, gamma=gamma):
    """n-step TD targets of one rollout, computed backwards: y_t = r_t + γ·y_{t+1}, y_n = V(s_n) or 0.

    ``bootstrap_value`` is V(s_n) of the state after the last step; it is ignored when the rollout ended by
    termination (an absorbing state is worth 0). A truncated end, or a rollout cut mid-episode, keeps it.
    Returns a float32 tensor shaped like ``rewards`` (n,).
    """
    R = 0.0 if terminated else float(bootstrap_value)
    out = [0.0] * len(rewards)
    for t in range(len(rewards) - 1, -1, -1):
        R = float(rewards[t]) + gamma * R
        out[t] = R
    return torch.tensor(out, dtype=torch.float32)


def a3c_loss(model, s, a, rewards, terminated, gamma=gamma, ent_coef=0.0):
    """Loss of one rollout. ``s`` (n+1, obs_dim) holds s_0..s_{n-1} and the bootstrap state s_n; ``a`` (n,).

    One forward pass gives π and V for all n+1 states; V(s_n) only feeds the (constant) targets.
    Returns (loss, policy_loss, value_loss, entropy).
    """
    n = len(rewards)
    logits, v = model(s)
    y = n_step_targets(rewards, v[n].item(), terminated, gamma)
    v = v[:n]
    log_pi = F.log_softmax(logits[:n], dim=-1)
    log_pi_a = log_pi.gather(1, a.unsqueeze(1)).squeeze(1)
    policy_loss = -(log_pi_a * (y - v).detach()).mean()      # −log π(a|s)·A, A = y − V(s) a constant
    value_loss = F.smooth_l1_loss(v, y)
    entropy = -(log_pi.exp() * log_pi).sum(-1).mean()         # H[π(·|s)], the bonus keeps π from collapsing
    loss = policy_loss + value_loss - ent_coef * entropy
    return loss, policy_loss.detach(), value_loss.detach(), entropy.detach()


class SharedAdam:
    """Adam whose step count and moment estimates live in shared memory: one optimizer state for all workers.

    With a ``lock`` the steps are serialized (workers still act and compute gradients in parallel, ~95% of
    their time): measured on CartPole, lock-free (Hogwild) steps let about 1 run in 4 blow up its weights, locked
    steps 0 of 16. The same update as ``torch.optim.Adam`` (a test compares them); not a subclass because
    building any torch optimizer imports torch._dynamo, ~1 s of start-up.
    """

    def __init__(self, params, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, lock=None):
        self.params, self.lr, self.betas, self.eps, self.lock = list(params), lr, betas, eps, lock
        self.steps = torch.zeros((), dtype=torch.int64).share_memory_()
        self.exp_avg = [torch.zeros_like(p).share_memory_() for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p).share_memory_() for p in self.params]

    @torch.no_grad()
    def step(self):
        """m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  θ ← θ − lr·m̂/(√v̂ + eps), for all tensors at once."""
        grads, (beta1, beta2) = [p.grad for p in self.params], self.betas
        with self.lock if self.lock is not None else contextlib.nullcontext():
            self.steps += 1
            t = int(self.steps)
            torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(self.exp_avg_sq, beta2)
            torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(self.exp_avg_sq)
            torch._foreach_div_(denom, math.sqrt(1 - beta2 ** t))
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(self.params, self.exp_avg, denom, value=-self.lr / (1 - beta1 ** t))


def push_gradients(global_params, grads):
    """Make fresh ``grads`` the global parameters' gradients, so each is applied exactly once.

    The posts' ``global_param._grad = local_param.grad`` breaks on PyTorch 2, where ``zero_grad()`` sets grads
    to None: the global and local grads then alias, are never zeroed again and add up forever.
    """
    for p, g in zip(global_params, grads):
        p.grad = g


@torch.no_grad()
def pull_weights(local_params, global_params):
    torch._foreach_copy_(local_params, global_params)


def update_global(local_model, global_params, optimizer, s, a, rewards, terminated, gamma=gamma, ent_coef=0.0):
    """One A3C update from one rollout: gradient of the local model's loss -> global model, optimizer step on
    the global model, global weights -> local model. Returns (policy_loss, value_loss, entropy)."""
    local_params = list(local_model.parameters())
    loss, *stats = a3c_loss(local_model, s, a, rewards, terminated, gamma, ent_coef)
    push_gradients(global_params, torch.autograd.grad(loss, local_params))
    optimizer.step()
    pull_weights(local_params, global_params)
    return stats


class FastPolicy:
    """Samples a ~ π(·|s) = softmax(fc_pi(relu(fc1(s)))) of a local ActorCritic without torch.

    For one state, NumPy on zero-copy views of the model's weights takes ~3 µs where torch takes ~18 µs
    (plus ~15 µs for softmax + torch.multinomial): acting is most of a worker's time between updates.
    The views stay valid because ``pull_weights`` copies into the same tensors.
    """

    def __init__(self, model, seed):
        self.w1, self.b1, self.w2, self.b2 = (p.detach().numpy() for p in (
            model.fc1.weight, model.fc1.bias, model.fc_pi.weight, model.fc_pi.bias))
        self.rng = random.Random(seed)

    def _exp_logits(self, s):
        h = self.w1 @ s + self.b1
        logits = (self.w2 @ np.maximum(h, 0.0, out=h) + self.b2).tolist()
        m = max(logits)
        return [math.exp(x - m) for x in logits]        # π(·|s) up to its normaliser

    def probs(self, s):
        e = self._exp_logits(s)
        return [x / sum(e) for x in e]

    def sample(self, s):
        e = self._exp_logits(s)
        u = self.rng.random() * sum(e)
        for a, x in enumerate(e):
            u -= x
            if u < 0.0:
                return a
        return len(e) - 1


def make_env(env_id, render_mode=None):
    return common.make_env(env_id, render_mode, what="a3c.py (a discrete-action method)")


# ----------------------------------------------------------------------------------------------
# Worker process (top level and picklable: works with the spawn start method)
# ----------------------------------------------------------------------------------------------
def worker(rank, cfg, global_model, optimizer, counter, stop, queue):
    """Entry point of training process ``rank``: trains until ``stop`` is set, reports errors on ``queue``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C goes to the whole group: the main process handles it
    try:
        _train_worker(rank, cfg, global_model, optimizer, counter, stop, queue)
    except KeyboardInterrupt:
        pass
    except BaseException as e:  # noqa: BLE001  (reported to the main process, which exits non-zero)
        stop.set()
        queue.put(("error", rank, f"{type(e).__name__}: {e}", traceback.format_exc()))
        queue.close()
        queue.join_thread()
        sys.exit(1)


def _train_worker(rank, cfg, global_model, optimizer, counter, stop, queue):
    torch.set_num_threads(1)
    seed = cfg["seed"] + rank
    common.seed_everything(seed, threads=1)
    fail_at = int(os.environ.get("A3C_TEST_FAIL_AT_STEP", 0)) if rank == 0 else 0   # test hook
    parent = multiprocessing.parent_process()
    T, gamma_, scale, total = cfg["update_interval"], cfg["gamma"], cfg["reward_scale"], cfg["total_timesteps"]

    env = make_env(cfg["env_id"])
    env.action_space.seed(seed)
    local_model = ActorCritic(**cfg["model_kwargs"])
    local_params, global_params = list(local_model.parameters()), list(global_model.parameters())
    if optimizer.params[0] is not global_params[0]:
        raise RuntimeError("the optimizer does not hold the shared model's parameters")
    pull_weights(local_params, global_params)
    policy = FastPolicy(local_model, seed)

    # Rollout storage, filled in place through NumPy views: no tensors are built per step.
    s_buf = torch.zeros(T + 1, env.observation_space.shape[0])
    a_buf = torch.zeros(T, dtype=torch.long)
    s_np, a_np = s_buf.numpy(), a_buf.numpy()
    rewards = [0.0] * T
    obs, _ = env.reset(seed=seed)
    ep_ret, ep_len, local_steps, updates = 0.0, 0, 0, 0
    loss_sums, next_parent_check = np.zeros(3), time.monotonic() + 1.0

    while not stop.is_set():
        terminated = done = False
        n = 0
        while n < T and not done:
            s_np[n] = obs
            a = policy.sample(s_np[n])
            obs, r, terminated, truncated, _ = env.step(a)
            a_np[n] = a
            rewards[n] = float(r) * scale
            ep_ret += float(r)
            ep_len += 1
            n += 1
            done = terminated or truncated
        s_np[n] = obs   # the real last s' (no autoreset): bootstrap state unless terminated

        stats = update_global(local_model, global_params, optimizer, s_buf[:n + 1], a_buf[:n], rewards[:n],
                              terminated, gamma_, cfg["ent_coef"])

        with counter.get_lock():
            counter.value += n
            step = counter.value
        local_steps += n
        updates += 1
        loss_sums += [x.item() for x in stats]
        if updates % LOSS_EVERY == 0:
            queue.put(("losses", rank, *(loss_sums / LOSS_EVERY), step))
            loss_sums[:] = 0.0
        if done:
            queue.put(("episode", rank, ep_ret, ep_len, step))
            obs, _ = env.reset()
            ep_ret, ep_len = 0.0, 0
        if step >= total:
            stop.set()
        if fail_at and local_steps >= fail_at:
            raise RuntimeError(f"A3C_TEST_FAIL_AT_STEP={fail_at} reached")
        if time.monotonic() > next_parent_check:   # never outlive a main process that was killed hard
            next_parent_check = time.monotonic() + 1.0
            if parent is not None and not parent.is_alive():
                break
    env.close()


# ----------------------------------------------------------------------------------------------
# Main process
# ----------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = common.base_parser("A3C with torch.multiprocessing (minimalRL a3c.py, fixed for PyTorch 2 and Gymnasium)",
                           "CartPole-v1", 1_000_000, __doc__)
    g = p.add_argument_group("hyperparameters")
    g.add_argument("--num-workers", type=common.positive_int, default=num_workers,
                   help="training processes (default: the number of CPU cores)")
    g.add_argument("--update-interval", type=common.positive_int, default=update_interval,
                   help="steps per rollout before a worker updates the global model (t_max)")
    g.add_argument("--learning-rate", type=common.positive_float, default=learning_rate)
    g.add_argument("--gamma", type=float, default=gamma)
    g.add_argument("--hidden", type=common.positive_int, default=hidden, help="hidden units")
    g.add_argument("--reward-scale", type=common.positive_float, default=reward_scale)
    g.add_argument("--ent-coef", type=float, default=ent_coef, help="entropy bonus coefficient")
    g.add_argument("--start-method", choices=("spawn", "fork", "forkserver"), default=start_method,
                   help="how worker processes are started (spawn: portable; fork: fastest start, Unix only)")
    return p.parse_args(argv)


def train(args):
    env = make_env(args.env_id)
    common.default_target(args, env)
    model_kwargs = dict(obs_dim=env.observation_space.shape[0], n_actions=int(env.action_space.n),
                        hidden=args.hidden)
    env.close()
    global_model = ActorCritic(**model_kwargs)
    global_model.share_memory()
    ctx = mp.get_context(args.start_method)
    optimizer = SharedAdam(global_model.parameters(), lr=args.learning_rate, lock=ctx.Lock())
    cfg = dict(env_id=args.env_id, seed=args.seed, update_interval=args.update_interval, gamma=args.gamma,
               reward_scale=args.reward_scale, ent_coef=args.ent_coef, total_timesteps=args.total_timesteps,
               model_kwargs=model_kwargs)

    counter, stop, queue = ctx.Value("q", 0), ctx.Event(), ctx.Queue()
    procs, errors, log = [], [], None
    step, reason = 0, "reached --total-timesteps"
    try:
        # Workers start before the SummaryWriter starts its thread (forking a multi-threaded process is
        # unsafe); TensorBoard is imported first so that the logger's clock starts right after them.
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        procs = common.start_processes(ctx, args.num_workers, worker,
                                       (cfg, global_model, optimizer, counter, stop, queue), "a3c-worker")
        log = common.RunLogger(args, "a3c")
        while not stop.is_set():
            try:
                msg = queue.get(timeout=0.2)
            except queue_lib.Empty:
                msg = None
            if msg is None:
                dead = [p for p in procs if p.exitcode is not None]
                if dead and not stop.is_set():   # exited before the stop signal without a word: killed, crashed
                    msg = ("error", int(dead[0].name.rsplit("-", 1)[1]), f"exited with code {dead[0].exitcode}", "")
            if msg is None:
                continue
            kind, rank = msg[0], msg[1]
            if kind == "episode":
                _, _, ret, length, step = msg
                log.episode(ret, length, step)
                if log.solved():
                    reason = f"solved (mean return >= {args.target_return:g})"
                    break
            elif kind == "losses":
                log.scalars({"losses/policy_loss": msg[2], "losses/value_loss": msg[3], "losses/entropy": msg[4]},
                            msg[5])
            elif kind == "error":
                errors.append(msg)
                break
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        errors += [m for m in common.stop_processes(procs, stop, queue) if m[0] == "error"]
        if not reason.startswith("solved"):
            step = counter.value
        if errors:
            reason = "stopped by a worker error"
        if log is not None:
            common.save_model(log.model_path, "a3c", args.env_id, model_kwargs, global_model.state_dict(),
                              vars(args))
            log.close(step, reason)
            print(f"model saved to {log.model_path}\n  watch it: python a3c.py --load {log.model_path} --render")
    if errors:
        _, rank, text, tb = errors[0]
        if tb and log is not None:
            with open(os.path.join(log.dir, "worker_error.log"), "w") as f:
                f.write(f"worker {rank}:\n{tb}")
            text += f"  (traceback in {os.path.join(log.dir, 'worker_error.log')})"
        print(f"error: worker {rank} failed: {text}", file=sys.stderr)
        sys.exit(1)
    if reason == "interrupted":
        raise KeyboardInterrupt  # saved and flushed: run_cli exits quietly with status 130
    return global_model, log


def main(argv=None):
    args = parse_args(argv)
    common.prepare(args)          # seeds; --render/--video fail now, not after training
    if args.load:
        env_id, model = load_for_eval(args, "a3c")
    else:
        common.resolve_env_id(args, "CartPole-v1")
        model, _ = train(args)
        env_id = args.env_id
        if not (args.render or args.video):
            return
    watch(args, env_id, model, make_env)


if __name__ == "__main__":
    common.run_cli(main)
