"""Shared plumbing for actor_critic.py, a3c.py and sac.py (no algorithm logic lives here).

Environment creation and space checks, seeding, the command line every script shares, the run folder
with its TensorBoard writer, the progress line, atomic model saving/loading and evaluation.
"""
import argparse
import collections
import contextlib
import datetime
import json
import multiprocessing.connection
import os
import queue as queue_lib
import random
import signal
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch


class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr, exit status 2, no traceback."""


def run_cli(main):
    """Run ``main()``: a UsageError becomes a one-line message (exit 2), Ctrl-C a quiet exit 130."""
    try:
        main()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # stdout closed early (e.g. `| head`): the model and logs are already saved
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults (unless the help text already explains them), keep the docstring's equations as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of the usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def base_parser(description, default_env, default_timesteps, doc=None, default_window=100, window_help=None):
    """The flags every script shares; each script adds its own hyperparameters to the result."""
    p = _Parser(description=description, epilog=doc,
                                formatter_class=_Formatter)
    g = p.add_argument_group("run")
    g.add_argument("--env-id", default=None,
                   help=f"Gymnasium env id (default: {default_env}, or the env a --load model was trained on)")
    g.add_argument("--seed", type=int, default=1, help="seeds Python, NumPy, torch, env resets and action space")
    g.add_argument("--total-timesteps", type=positive_int, default=default_timesteps,
                   help="env steps to train for (an upper bound when early stopping is on)")
    g.add_argument("--target-return", type=float, default=None,
                   help="stop once the mean of the last --return-window episode returns reaches this "
                        "(default: the env's reward_threshold, if it has one)")
    g.add_argument("--return-window", type=positive_int, default=default_window,
                   help=window_help or "episodes averaged for --target-return")
    g.add_argument("--keep-training", action="store_true",
                   help="train for all --total-timesteps even after the target return is reached")
    g.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads; 1 is fastest for networks this small")
    g.add_argument("--print-interval", type=positive_int, default=20, help="episodes between progress lines")
    g = p.add_argument_group("output and evaluation")
    g.add_argument("--logdir", default="runs", help="parent folder of the run folders (TensorBoard + model.pt)")
    g.add_argument("--load", metavar="PATH", default=None,
                   help="evaluate a saved model.pt (or its run folder) instead of training")
    g.add_argument("--eval-episodes", type=positive_int, default=5, help="episodes to play with --load/--render")
    g.add_argument("--render", action="store_true",
                   help="watch evaluation episodes in a window (after training, or with --load)")
    g.add_argument("--video", metavar="PATH", default=None,
                   help="record the evaluation episodes as MP4 files into this folder (needs moviepy)")
    return p


def resolve_env_id(args, default_env, saved=None):
    args.env_id = args.env_id or (saved or {}).get("env_id") or default_env
    return args.env_id


# ----------------------------------------------------------------------------------------------
# Environments
# ----------------------------------------------------------------------------------------------
def _space_name(space):
    return type(space).__name__


def make_env(env_id, render_mode=None, obs_types=(gym.spaces.Box,), action_types=(gym.spaces.Discrete,),
             what="", **kwargs):
    """``gym.make`` with one-line errors for unknown ids and for unsupported observation/action spaces."""
    try:
        env = gym.make(env_id, render_mode=render_mode, **kwargs)
    except gym.error.Error as e:
        raise UsageError(f"unknown environment '{env_id}': {e}") from None
    except (ImportError, ModuleNotFoundError) as e:
        raise UsageError(f"environment '{env_id}' needs a package that is not installed: {e}") from None
    check_spaces(env, env_id, obs_types, action_types, what)
    return env


def check_spaces(env, env_id, obs_types, action_types, what=""):
    obs, act = env.observation_space, env.action_space
    ok = isinstance(obs, obs_types) and len(getattr(obs, "shape", ()) or ()) == 1 and isinstance(act, action_types)
    if not ok:
        env.close()
        want_obs = "/".join(t.__name__ for t in obs_types)
        want_act = "/".join(t.__name__ for t in action_types)
        raise UsageError(
            f"{env_id} has a {_space_name(obs)}{getattr(obs, 'shape', '')} observation space and a "
            f"{_space_name(act)} action space; {what or 'this script'} supports a flat {want_obs} observation "
            f"space and a {want_act} action space")


def check_render_possible():
    """``--render`` opens a window: fail with a clear message where that cannot work."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError("--render needs a display, and none was found (DISPLAY is not set); "
                         "use --video PATH to record the episodes to a file instead")
    try:
        import pygame  # noqa: F401  (classic-control rendering)
    except ImportError:
        raise UsageError("--render needs pygame: pip install \"gymnasium[classic-control]\"") from None


def check_video_possible():
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise UsageError("--video needs moviepy (and pygame for classic-control envs): "
                         "pip install moviepy \"gymnasium[classic-control]\"") from None


def prepare(args):
    """Seed everything, and check up front that --render / --video can work (not after a long training)."""
    seed_everything(args.seed, args.threads)
    if args.render:
        check_render_possible()
    if args.video:
        check_video_possible()


def seed_everything(seed, threads=1):
    """Seed Python, NumPy and torch, and fix torch's thread count (1 is fastest for tiny networks)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Run folder, TensorBoard and progress line
# ----------------------------------------------------------------------------------------------
class RunLogger:
    """Owns a run folder ``<logdir>/<env>__<algo>__<seed>__<time>`` with TensorBoard events and model.pt.

    ``episode()`` records finished episodes (x-axis: env steps) and prints a progress line in the posts'
    style every ``print_interval`` episodes; ``solved()`` tells whether the mean of the last
    ``window`` returns reached the target.
    """

    def __init__(self, args, algo):
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only training needs it
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{args.env_id.replace('/', '_')}__{algo}__{args.seed}__{stamp}"
        self.dir = os.path.join(args.logdir, name)
        n = 1
        while os.path.exists(self.dir):  # two runs in the same second get distinct folders
            n += 1
            self.dir = os.path.join(args.logdir, f"{name}-{n}")
        os.makedirs(self.dir)
        self.writer = SummaryWriter(self.dir)
        hparams = {k: v for k, v in sorted(vars(args).items())}
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" +
                             "\n".join(f"|{k}|{v}|" for k, v in hparams.items()))
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump({"algo": algo, **hparams}, f, indent=2)
        self.print_interval = args.print_interval
        self.target = args.target_return
        self.keep_training = args.keep_training
        self.returns = collections.deque(maxlen=args.return_window)
        self.recent = []  # returns since the last progress line
        self.episodes = 0
        self.start = time.time()
        self._sps_mark = (self.start, 0)
        print(f"run folder: {self.dir}  (tensorboard --logdir {args.logdir})")

    @property
    def model_path(self):
        return os.path.join(self.dir, "model.pt")

    def elapsed(self):
        return time.time() - self.start

    def scalar(self, tag, value, step):
        self.writer.add_scalar(tag, value, step)

    def scalars(self, values, step):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def episode(self, ret, length, step):
        """Record one finished episode at env step ``step``."""
        self.episodes += 1
        self.returns.append(ret)
        self.recent.append(ret)
        self.writer.add_scalar("charts/episodic_return", ret, step)
        self.writer.add_scalar("charts/episodic_length", length, step)
        if self.episodes % self.print_interval == 0:
            now = time.time()
            t0, s0 = self._sps_mark
            sps = (step - s0) / max(now - t0, 1e-9)
            self._sps_mark = (now, step)
            self.writer.add_scalar("charts/SPS", sps, step)
            print(f"# of episode: {self.episodes}, avg score: {np.mean(self.recent):.1f}  "
                  f"(last {len(self.returns)}: {np.mean(self.returns):.1f})  "
                  f"steps: {step}  {sps:,.0f} steps/s  {now - self.start:.1f}s", flush=True)
            self.recent = []

    def solved(self):
        return (self.target is not None and not self.keep_training and len(self.returns) == self.returns.maxlen
                and float(np.mean(self.returns)) >= self.target)

    def close(self, step, reason):
        self.writer.close()   # flushes the events first: nothing below can lose them
        mean = f"{np.mean(self.returns):.1f}" if self.returns else "n/a"
        print(f"{reason} after {step} env steps, {self.episodes} episodes, {self.elapsed():.1f}s; "
              f"mean return of the last {len(self.returns)} episodes: {mean}")


def default_target(args, env):
    if args.target_return is None and env.spec is not None:
        args.target_return = env.spec.reward_threshold
    return args.target_return


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------
def save_model(path, algo, env_id, model_kwargs, state_dict, hyperparams=None):
    """Write ``path`` atomically: a crash or Ctrl-C never leaves a half-written model file."""
    payload = {"algo": algo, "env_id": env_id, "model_kwargs": model_kwargs,
               "state_dict": {k: v.detach().clone() for k, v in state_dict.items()},
               "hyperparams": {k: v for k, v in (hyperparams or {}).items()
                               if isinstance(v, (int, float, str, bool, type(None)))}}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_model(path, algo):
    """Read a file written by ``save_model`` for ``algo``; any problem is a UsageError."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.pt")
    if not os.path.isfile(path):
        raise UsageError(f"--load: no such file: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UsageError(f"--load: {path} is not a model file saved by {algo}.py") from None
    if not isinstance(payload, dict) or payload.get("algo") != algo or "state_dict" not in payload:
        found = payload.get("algo") if isinstance(payload, dict) else None
        extra = f" (it was saved by {found}.py)" if found else ""
        raise UsageError(f"--load: {path} is not a model saved by {algo}.py{extra}")
    return payload


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def evaluate(make, act, episodes, seed, render=False, video=None):
    """Play ``episodes`` episodes with ``act(obs) -> action`` and print each return and the mean.

    ``make(render_mode)`` builds the env. ``render`` opens a window; ``video`` records MP4s into a folder.
    """
    if render:
        check_render_possible()
    if video:
        check_video_possible()
    env = make("human" if render else ("rgb_array" if video else None))
    if video:
        env = gym.wrappers.RecordVideo(env, video, episode_trigger=lambda _: True, disable_logger=True)
    returns = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            ret, done = 0.0, False
            while not done:
                obs, r, terminated, truncated, _ = env.step(act(obs))
                ret += float(r)
                done = terminated or truncated
            returns.append(ret)
            print(f"eval episode {ep + 1}: return {ret:.1f}", flush=True)
    finally:
        env.close()
    print(f"mean return over {len(returns)} episodes: {np.mean(returns):.1f}")
    if video:
        print(f"videos written to {video}")
    return returns


# ----------------------------------------------------------------------------------------------
# Worker processes (a3c.py)
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def sigint_ignored():
    """Ignore Ctrl-C inside the block; processes started meanwhile inherit that and leave it to the parent."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def start_processes(ctx, n, target, args, name):
    """Start ``n`` daemon processes ``target(rank, *args)`` that a terminal's Ctrl-C does not reach."""
    with sigint_ignored():
        procs = [ctx.Process(target=target, args=(rank, *args), name=f"{name}-{rank}", daemon=True)
                 for rank in range(n)]
        for p in procs:
            p.start()
    return procs


def drain(queue):
    """Every message waiting on ``queue``, without blocking."""
    msgs = []
    while True:
        try:
            msgs.append(queue.get_nowait())
        except (queue_lib.Empty, OSError, ValueError, EOFError):
            return msgs


def stop_processes(procs, stop, queue, timeout=5.0):
    """Set ``stop``, wait up to ``timeout`` s for every process (draining ``queue`` so none blocks on it), then
    terminate and finally kill stragglers. Returns the messages drained meanwhile."""
    stop.set()
    msgs, deadline = [], time.monotonic() + timeout
    with sigint_ignored():   # a second Ctrl-C must not leave orphans behind
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            msgs += drain(queue)
            multiprocessing.connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=0.05)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join()
    return msgs + drain(queue)
