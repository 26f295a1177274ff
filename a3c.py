"""A3C (Asynchronous Advantage Actor-Critic) with torch.multiprocessing, for any env with Discrete actions.

The posts' minimalRL ``a3c.py``, made correct on PyTorch 2 and Gymnasium. A global actor-critic lives in shared
memory; ``--num-workers`` processes each keep a local copy, play ``--update-interval`` steps (fewer if the episode
ends) and compute for each step t of that rollout of length n the n-step TD target, backwards:

    R = 0 if the rollout ended by termination, else V(s_n)     (a truncated end bootstraps from its real last s')
    y_t = r_t + γ·y_{t+1}  (y_n = R)        advantage A_t = y_t − V(s_t), a constant (detached)
    loss L = (1/t_max)·Σ_t [ −log π(a_t|s_t)·A_t + smooth_l1(V(s_t), y_t) − β·H[π(·|s_t)] ]

Every env step weighs the same, 1/t_max, whatever the rollout's length n ≤ t_max: a 1-step stub at an episode's end
moves the weights a twentieth as much as a full rollout (the posts' mean over n would move them as much; the paper
sums the steps, which is this times t_max).

Each worker writes dL/dθ_local into the global model's gradients, takes one step of an Adam whose moments all
workers share, and copies the global weights back. Nobody waits for anybody: that is the "asynchronous".

Shapes in a worker: s (n+1, obs_dim), s_n the bootstrap state; a, r, y, A (n,); policy logits (n+1, n_actions).
"""
import os
import signal
import sys

if __name__ == "__main__" and "IPython" not in sys.modules:   # a script: Ctrl-C while torch loads leaves quietly
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda signum, frame: os._exit(128 + signum))

import contextlib  # noqa: E402  (the slow imports come after the handlers)
import math  # noqa: E402
import multiprocessing.connection  # noqa: E402
import queue as queue_lib  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402

hp = common.hp


@dataclass
class Args(common.RunArgs):
    """Hyperparameters, each with its default, the posts' value and its range (README: why they differ)."""
    env_id: str = "CartPole-v1"
    total_timesteps: int = 1_000_000
    num_workers: int = hp(2, "training processes; the same on every machine (more are a different algorithm: "
                             "more, staler updates at once)", post="cpu_count()", range="(0, inf)")
    learning_rate: float = hp(1e-3, "Adam step size of the shared optimizer", post=2e-4, range="(0, inf)")
    anneal_lr: bool = hp(False, "decay the learning rate linearly to 0 over --total-timesteps", post=False)
    update_interval: int = hp(20, "steps per rollout before a worker updates the global model (t_max)", post=5,
                              range="(0, inf)")
    gamma: float = hp(0.99, "discount γ", post=0.98, range="[0, 1]")
    hidden: int = hp(256, "units in the hidden layer", post=256, range="(0, inf)")
    reward_scale: float = hp(0.01, "rewards are multiplied by this for training", post="r/100", range="(0, inf)")
    ent_coef: float = hp(1e-4, "entropy bonus β, next to the scaled rewards (1e-4 with --reward-scale 0.01 "
                               "weighs as 0.01 would on raw rewards)", post=0.0, range="[0, inf)")
    max_grad_norm: float = hp(0.5, "clip each update's gradient norm to this (0: no clipping)", post=0.0,
                              range="[0, inf)")
    start_method: str = hp("fork" if sys.platform.startswith("linux") else "spawn",   # fork: 0.3 s, spawn: 2-5 s
                           "how worker processes start (spawn: portable; fork: fastest, Unix only)",
                           post="Python's default", choices=("spawn", "fork", "forkserver"))


class ActorCritic(nn.Module):
    """Policy π(·|s) = softmax(fc_pi(h)) and value V(s) = fc_v(h) on a shared trunk h = relu(fc1(s))."""

    def __init__(self, obs_dim, n_actions, hidden=256):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, hidden)
        self.fc_pi = nn.Linear(hidden, n_actions)
        self.fc_v = nn.Linear(hidden, 1)

    def forward(self, x):
        """(N, obs_dim) -> policy logits (N, n_actions), V(s) (N,)."""
        h = F.relu(self.fc1(x))
        return self.fc_pi(h), self.fc_v(h).squeeze(-1)

    def pi(self, x):
        return self.fc_pi(F.relu(self.fc1(x)))


def n_step_targets(rewards, bootstrap_value, terminated, gamma):
    """y_t = r_t + γ·y_{t+1}, computed backwards from y_n = V(s_n), or 0 if the rollout ended by termination."""
    R, out = 0.0 if terminated else float(bootstrap_value), [0.0] * len(rewards)
    for t in range(len(rewards) - 1, -1, -1):
        out[t] = R = float(rewards[t]) + gamma * R
    return torch.tensor(out, dtype=torch.float32)


def a3c_loss(model, s, a, rewards, terminated, gamma, ent_coef=0.0, t_max=None):
    """Loss of one rollout of n steps, each weighing 1/t_max (default n: the mean); ``s`` (n+1, obs_dim) ends with
    the bootstrap state. -> (loss, policy, value, entropy), each a sum over the steps / t_max."""
    n = len(rewards)
    logits, v = model(s)
    y = n_step_targets(rewards, v[n].item(), terminated, gamma)
    v, log_pi = v[:n], F.log_softmax(logits[:n], dim=-1)
    policy_loss = -(log_pi.gather(1, a.unsqueeze(1)).squeeze(1) * (y - v).detach()).sum()   # A = y − V(s): constant
    value_loss = F.smooth_l1_loss(v, y, reduction="sum")
    entropy = -(log_pi.exp() * log_pi).sum()
    policy_loss, value_loss, entropy = (x / (t_max or n) for x in (policy_loss, value_loss, entropy))
    return policy_loss + value_loss - ent_coef * entropy, policy_loss.detach(), value_loss.detach(), entropy.detach()


class SharedAdam:
    """Adam with shared step count and moments: all workers advance one state, under a lock (without it 1 run in 4
    blew up). Not a torch.optim.Adam subclass: any torch optimizer adds 1.2 s of start-up (torch._dynamo)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, lock=None):
        self.params, self.lr, self.betas, self.eps, self.lock = list(params), lr, betas, eps, lock
        self.steps = torch.zeros((), dtype=torch.int64).share_memory_()
        self.exp_avg = [torch.zeros_like(p).share_memory_() for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p).share_memory_() for p in self.params]

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        with self.lock or contextlib.nullcontext():
            t = int(self.steps.add_(1))
            for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
                m.lerp_(p.grad, 1 - b1)                                    # m ← β1·m + (1−β1)·g
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)          # v ← β2·v + (1−β2)·g²
                p.addcdiv_(m, (v / (1 - b2 ** t)).sqrt_().add_(self.eps), value=-self.lr / (1 - b1 ** t))


def update_global(local_model, global_model, optimizer, s, a, rewards, terminated, args):
    """Local gradient -> global model, shared Adam step, global weights -> local model. The posts'
    ``global_param._grad = local_param.grad`` breaks on PyTorch 2 (``zero_grad()`` sets grads to None: both alias one
    tensor that is never zeroed again and sums every gradient so far); ``torch.autograd.grad``'s are fresh."""
    loss, *stats = a3c_loss(local_model, s, a, rewards, terminated, args.gamma, args.ent_coef, args.update_interval)
    if not torch.isfinite(loss):  # a nan/inf loss never reaches the global model: the worker stops (check_finite)
        return stats
    for p, g in zip(global_model.parameters(), torch.autograd.grad(loss, list(local_model.parameters()))):
        p.grad = g                    # this process's own .grad of the shared weights
    if args.max_grad_norm:
        nn.utils.clip_grad_norm_(global_model.parameters(), args.max_grad_norm)
    optimizer.step()
    for p_local, p in zip(local_model.parameters(), global_model.parameters()):
        p_local.detach().copy_(p)     # in place, so sample_action's NumPy views follow (2x faster than load_state_dict)
    return stats


def sample_action(w1, b1, w2, b2, s, rng):
    """a ~ π(·|s) = softmax(w2·relu(w1·s + b1) + b2) for one state. Speed trick: NumPy on views of the local model's
    weights takes ~3 µs where the plain ``Categorical(logits=model.pi(torch.as_tensor(s))).sample()`` takes ~34 µs,
    and acting is most of a worker's time."""
    logits = (w2 @ np.maximum(w1 @ s + b1, 0.0) + b2).tolist()
    e = [math.exp(x - max(logits)) for x in logits]          # π(·|s) up to its normaliser
    u = rng.random() * sum(e)
    for a, x in enumerate(e):
        u -= x
        if u < 0.0:
            return a
    return len(e) - 1


def worker(rank, args, model_kwargs, global_model, optimizer, counter, stop, queue):
    """Training process ``rank``: rollouts and updates of the global model until ``stop`` is set."""
    seed = args.seed + rank
    common.seed_everything(seed, threads=1)
    env = common.make_env(args.env_id, True)
    env.action_space.seed(seed)
    local_model = ActorCritic(**model_kwargs)
    local_model.load_state_dict(global_model.state_dict())
    weights = [p.detach().numpy() for p in (local_model.fc1.weight, local_model.fc1.bias, local_model.fc_pi.weight,
                                            local_model.fc_pi.bias)]   # views: they follow update_global's copies
    rng = random.Random(seed)

    T = args.update_interval       # rollout storage filled in place: no tensors are built per step
    s_buf, a_buf, rewards = torch.zeros(T + 1, model_kwargs["obs_dim"]), torch.zeros(T, dtype=torch.long), [0.0] * T
    s_np, a_np = s_buf.numpy(), a_buf.numpy()
    obs, _ = env.reset(seed=seed)
    updates = 0
    while not stop.is_set():
        n, terminated, done = 0, False, False
        while n < T and not done:
            s_np[n] = obs
            a_np[n] = sample_action(*weights, s_np[n], rng)
            obs, r, terminated, truncated, info = env.step(int(a_np[n]))
            rewards[n], n, done = float(r) * args.reward_scale, n + 1, terminated or truncated
        s_np[n] = obs   # the real last s' (no autoreset): the bootstrap state unless terminated
        if args.anneal_lr:
            optimizer.lr = args.learning_rate * max(1.0 - counter.value / args.total_timesteps, 0.0)
        stats = update_global(local_model, global_model, optimizer, s_buf[:n + 1], a_buf[:n], rewards[:n],
                              terminated, args)
        with counter.get_lock():
            counter.value += n
            step = counter.value
        updates += 1
        common.check_finite(updates, step, **dict(zip(("policy_loss", "value_loss", "entropy"), stats)))
        if updates % 100 == 0:
            queue.put(("losses", rank, *(x.item() for x in stats), step))
        if done:
            queue.put(("episode", rank, float(info["episode"]["r"]), int(info["episode"]["l"]), step))
            obs, _ = env.reset()
        if step >= args.total_timesteps:
            stop.set()
    env.close()


class Workers:
    """The worker processes ``target(rank, *args, stop, queue)``. They ignore Ctrl-C and SIGTERM (a terminal's Ctrl-C
    reaches the whole process group): the main process stops them with ``stop``; an exception arrives as an "error"
    message, a worker that dies silently (killed) is a Failure."""
    SIGNALS = {signal.SIGINT, signal.SIGTERM}

    def __init__(self, ctx, n, target, args):
        self.stop, self.queue = ctx.Event(), ctx.Queue()
        # Blocked, not ignored, while forking: a signal arriving now waits and reaches this process afterwards;
        # each child inherits the block and ignores the signals before it unblocks them (worker_main).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        try:
            self.procs = [ctx.Process(target=worker_main, args=(target, rank, *args, self.stop, self.queue),
                                      name=f"worker-{rank}", daemon=True) for rank in range(n)]
            for p in self.procs:
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def messages(self, timeout=0.0):
        """The messages waiting (up to ``timeout`` s for the first); a worker gone silently (killed) is a Failure."""
        msgs = []
        with contextlib.suppress(queue_lib.Empty, OSError, ValueError, EOFError):
            msgs.append(self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait())
            while True:
                msgs.append(self.queue.get_nowait())
        dead = [(rank, p.exitcode) for rank, p in enumerate(self.procs) if p.exitcode is not None]
        if dead and not self.stop.is_set() and not any(m[0] == "error" for m in msgs):
            rank, code = dead[0]
            raise common.Failure(f"worker {rank} died ({f'signal {-code}' if code < 0 else f'exit status {code}'})")
        return msgs

    def stop_all(self, timeout=5.0):
        """Stop every worker (killed after ``timeout`` s); returns all messages: no finished episode is lost."""
        self.stop.set()
        msgs, deadline = [], time.monotonic() + timeout
        with common.signals_held():     # a second Ctrl-C leaves no orphans
            while any(p.is_alive() for p in self.procs) and time.monotonic() < deadline:
                msgs += self.messages()
                multiprocessing.connection.wait([p.sentinel for p in self.procs if p.is_alive()], timeout=0.05)
            for p in self.procs:
                if p.is_alive():
                    p.kill()
                p.join()
        return msgs + self.messages()


def worker_main(target, rank, *args):
    """A worker process: ignore Ctrl-C/SIGTERM, never outlive the main process, report an exception and exit 1."""
    for s in Workers.SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, Workers.SIGNALS)
    stop, queue = args[-2:]
    parent = multiprocessing.parent_process()     # a main process killed hard: stop too
    threading.Thread(target=lambda: (parent.join(), stop.set()), daemon=True).start()
    try:
        target(rank, *args)
    except BaseException as e:  # noqa: BLE001  (the main process reports it and exits non-zero)
        stop.set()
        queue.put(("error", rank, str(e) if isinstance(e, common.Failure) else f"{type(e).__name__}: {e}",
                   traceback.format_exc(), isinstance(e, common.Diverged)))
        queue.close()
        queue.join_thread()
        sys.exit(1)


def train(args):
    env = common.make_env(args.env_id, True)
    common.default_target(args, env)
    obs_dim, n_actions = common.spaces_of(env)
    env.close()
    model_kwargs = dict(obs_dim=obs_dim, n_actions=n_actions, hidden=args.hidden)
    global_model = ActorCritic(**model_kwargs).share_memory()
    ctx = mp.get_context(args.start_method)
    optimizer = SharedAdam(global_model.parameters(), lr=args.learning_rate, lock=ctx.Lock())
    counter = ctx.Value("q", 0)
    log = common.Logger(args, "a3c")                # the run folder: config.json, TensorBoard, progress lines
    print(f"{args.num_workers} worker processes (--num-workers), started with {args.start_method}")

    def handle(msgs):   # the main process only logs what the workers report; -> solved
        for kind, rank, *data in msgs:
            if kind == "episode":
                log.episode(*data)
            elif kind == "losses":
                log.scalars(dict(zip(("losses/policy_loss", "losses/value_loss", "losses/entropy"), data)), data[3])
            elif kind == "error":
                with open(os.path.join(log.dir, "worker_error.log"), "w") as f:
                    f.write(f"worker {rank}:\n{data[1]}")
                raise (common.Diverged if data[2] else common.Failure)(f"worker {rank} failed: {data[0]}  "
                                                                       f"(traceback in {f.name})")
        return common.solved(log, args)

    solved = False
    try:
        with common.graceful_stop():                # Ctrl-C/SIGTERM: stop_requested() turns true, the loop ends
            workers = Workers(ctx, args.num_workers, worker, (args, model_kwargs, global_model, optimizer, counter))
            try:
                while not (solved or workers.stop.is_set() or common.stop_requested()):
                    solved = handle(workers.messages(timeout=0.2))
            finally:
                solved = handle(workers.stop_all()) or solved
    finally:                                        # whatever ended the loop, an error too: save model.pt
        common.finish(log, counter.value, global_model, model_kwargs, solved)
    return global_model, log


@common.command   # one-line errors, Ctrl-C saves: on the command line and in a notebook
def main(argv=None):
    args = common.parse_args(Args, __doc__, argv)
    common.prepare(args, discrete=True)   # seeds; --render/--video fail now, not after training
    if args.start_method != "fork" and __name__ == "__main__" and not hasattr(sys.modules["__main__"], "__file__"):
        raise common.UsageError(f"--start-method {args.start_method} needs a3c.py as a file (not a cell): "
                                "%run a3c.py, or fork")
    if not args.load:
        _, log = train(args)
        if not (args.render or args.video):
            return
        args.load = log.model_path    # watch the model as saved
    saved = common.load_model(args.load, "a3c", args)
    model = ActorCritic(**saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    with torch.no_grad():         # evaluation plays a = argmax π(·|s)
        common.evaluate(args, True, lambda s: int(model.pi(torch.as_tensor(s, dtype=torch.float32)).argmax()), saved)


if __name__ == "__main__":
    main()
