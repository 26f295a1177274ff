"""What actor_critic.py, a3c.py and sac.py all use (copy it next to the script you use); no algorithm lives here.
Importing it changes nothing in the importing program: no signal handler, no output."""
import argparse
import collections
import contextlib
import dataclasses
import datetime
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import warnings

import gymnasium as gym
import numpy as np
import torch


# --- Errors: each is one line on stderr and an exit status, never a traceback -----------------------------------
class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit status 2."""


class Failure(Exception):
    """The run cannot go on (divergence, a dead worker, a disk that refuses writes): one line, exit status 1."""


class Diverged(Failure):
    """A loss became nan or inf (the update that produced it was not applied)."""


def os_error(e, path=None):
    return f"{getattr(e, 'filename', None) or path}: {e.strerror or e}" if (e.filename or path) else str(e)


# --- Ctrl-C and SIGTERM: the first asks the training loop to stop; saving is never interrupted -------------------
class _signals:
    received = 0        # the first SIGINT/SIGTERM that run_cli's handler received (0: none)
    graceful = False    # a training loop is running: it polls stop_requested() and stops itself
    held = False        # the model is being saved or workers stopped: note signals, act on none
    interrupted = False  # a notebook's interrupt button stopped a train() called from a cell


def _on_signal(signum, frame):   # run_cli's handler, for SIGINT and SIGTERM
    first, _signals.received = not _signals.received, _signals.received or signum
    if not _signals.held and not (_signals.graceful and first):
        raise KeyboardInterrupt   # outside training, or a second signal the loop has not acted on yet


def stop_requested():
    return bool(_signals.received)


@contextlib.contextmanager
def graceful_stop():
    """Around a training loop that polls stop_requested(). Under run_cli the first Ctrl-C/SIGTERM only makes it true
    (a second one raises KeyboardInterrupt). In a notebook cell that calls train() itself, the interrupt button's
    KeyboardInterrupt ends the loop and train() returns what it has; a program calling train() gets its own."""
    _signals.graceful, _signals.interrupted = True, False
    try:
        yield
    except KeyboardInterrupt:
        if _signals.received or not ipython():
            raise
        _signals.interrupted = True
    finally:
        _signals.graceful = False


@contextlib.contextmanager
def signals_held():
    """Signals that arrive inside are noted (stop_requested()) but interrupt nothing."""
    _signals.held = True
    try:
        yield
    finally:
        _signals.held = False


# --- Running main: on the command line, or in a notebook (Jupyter, Colab), whose kernel is left as it was ---------
def ipython():   # the IPython shell this code runs in (a Jupyter or Colab kernel, the ipython console), or None
    return getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()


def command(main):
    """``@common.command`` on ``main(argv=None)``: from the script's __main__ block or a notebook, run_cli runs it;
    called from another program, it is a plain function (raising its errors, leaving signals as they are)."""
    return lambda argv=None: run_cli(main, argv) if main.__module__ == "__main__" or ipython() else main(argv)


def _thread_error(a):   # TensorBoard's writer thread: its OSError comes back from the writer, reported then
    if not (issubclass(a.exc_type, OSError) and type(a.thread).__name__ == "_AsyncWriterThread"):
        sys.__excepthook__(a.exc_type, a.exc_value, a.exc_traceback)


def run_cli(main, argv=None):
    """Run ``main(argv)`` as a command: every expected problem is one line on stderr. On the command line it ends with
    an exit status; in a notebook it returns, and puts back the kernel's sys.argv, signal handlers and excepthook."""
    notebook, signals = bool(ipython()), (signal.SIGINT, signal.SIGTERM)
    saved = sys.argv, threading.excepthook, *map(signal.getsignal, signals)
    if notebook:   # the kernel's own argv (-f kernel.json) is not for us, but `%run script.py args` sets the script's
        file = main.__globals__.get("__file__")    # None in a pasted cell
        ran = file and os.path.abspath(sys.argv[0]) == os.path.abspath(file)
        sys.argv = [os.path.basename(file or "main"), *(argv if argv is not None else sys.argv[1:] if ran else [])]
    code, _signals.received = 0, 0    # (none from an earlier run in this notebook)
    for s in signals:
        signal.signal(s, _on_signal)
    threading.excepthook = _thread_error
    try:
        main(sys.argv[1:] if notebook else argv)
    except SystemExit as e:  # from argparse, after --help or its one line
        code = e.code
    except BrokenPipeError:  # stdout closed early (`| head`): the model and logs are already saved
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except (UsageError, Failure, OSError) as e:
        print(f"error: {os_error(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        code = 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:
        _signals.received = _signals.received or signal.SIGINT
    finally:
        if notebook:   # the next cell's interrupt button is the kernel's again
            sys.argv, threading.excepthook, *handlers = saved
            for s, handler in zip(signals, handlers):
                signal.signal(s, handler)
    if _signals.received and code == 0:
        print("interrupted" + (" (SIGTERM)" if _signals.received == signal.SIGTERM else ""), file=sys.stderr)
        code = 128 + _signals.received
    _signals.received = 0   # a train() called later in this notebook starts afresh
    if not notebook:
        sys.exit(code)


# --- Command line: each script declares its hyperparameters once, in an Args dataclass --------------------------
def hp(default, help, post=None, range=None, choices=None):
    """A field of ``Args``: default, one-line help, the posts' value, allowed range ("[0, 1]", "(0, inf)")."""
    return dataclasses.field(default=default, metadata=dict(help=help, post=post, range=range, choices=choices))


@dataclasses.dataclass
class RunArgs:
    """The flags every script shares (each script's Args adds its hyperparameters)."""
    env_id: str = hp(None, "Gymnasium id; module:Id imports your module first (with --load: the model's env)")
    seed: int = hp(1, "seeds Python, NumPy, torch, the env's first reset and the action space")
    total_timesteps: int = hp(100_000, "env steps to train for (an upper bound when the run stops once solved)",
                              range="(0, inf)")
    target_return: float = hp(None, "stop once the mean of the last --return-window returns reaches this "
                                    "(default: the env's reward_threshold, if any)")
    return_window: int = hp(None, "episodes averaged for --target-return (default: 100)", range="(0, inf)")
    keep_training: bool = hp(False, "train for all --total-timesteps even after the target return is reached")
    threads: int = hp(1, "torch CPU threads; 1 is fastest for networks this small", range="(0, inf)")
    print_interval: int = hp(20, "episodes between progress lines", range="(0, inf)")
    logdir: str = hp("runs", "parent folder of the run folders (TensorBoard events, config.json, model.pt)")
    load: str = hp(None, "evaluate a saved model.pt (or its run folder) instead of training")
    eval_episodes: int = hp(5, "episodes to play with --load, --render or --video", range="(0, inf)")
    render: bool = hp(False, "watch evaluation episodes in a window (after training, or with --load)")
    video: str = hp(None, "record the evaluation episodes as MP4 files into this folder (needs moviepy)")


def _converter(kind, interval):
    """argparse type: ``kind`` from text, finite, inside ``interval`` ("(0, inf)", "[0, 1]"...), one-line errors."""
    lo_closed, hi_closed = (interval or "[]")[0] == "[", (interval or "[]")[-1] == "]"
    lo, hi = (float(x) for x in interval[1:-1].split(",")) if interval else (-math.inf, math.inf)
    noun = "an integer" if kind is int else "a number"
    want = (f"must be a positive {noun.split()[-1]}" if (lo, lo_closed, hi) == (0, False, math.inf) else
            f"must be {'>=' if lo_closed else '>'} {lo:g}" if hi == math.inf else f"must be in {interval}")

    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got '{text}'") from None
        inside = kind is str or ((lo <= value if lo_closed else lo < value) and
                                 (value <= hi if hi_closed else value < hi))
        problem = ("must not be empty" if kind is str and not value.strip() else
                   f"must be a finite number, got {text}" if kind is float and not math.isfinite(value) else
                   None if inside else f"{want}, got {text}")
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    return convert


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of the usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(cls, doc, argv=None):
    """The dataclass ``cls`` as a command line (help with defaults and posts' values, checked types and ranges)."""
    p = _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    shared = {f.name: f for f in dataclasses.fields(RunArgs)}
    groups = {True: p.add_argument_group("run"), False: p.add_argument_group("hyperparameters")}
    for f in dataclasses.fields(cls):
        meta, default = f.metadata or shared[f.name].metadata, f.default   # a script re-declares some defaults
        notes = [f"default: {default}"] * (default is not None and default is not False) + [f"post: {meta['post']}"] * (
            meta["post"] is not None and meta["post"] != default)
        kw = dict(default=None if f.name == "env_id" else default, dest=f.name)   # env_id: None = not given
        if f.type is bool:
            kw["action"] = argparse.BooleanOptionalAction if default else "store_true"
        elif f.type is tuple:
            kw.update(nargs="+", type=_converter(type(default[0]), meta["range"]))
        else:
            kw.update(type=_converter(f.type, meta["range"]), choices=meta["choices"])
        groups[f.name in shared].add_argument("--" + f.name.replace("_", "-"), **kw).help = \
            (meta["help"] + (f" ({'; '.join(notes)})" if notes else "")).replace("%", "%%")
    args = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(p.parse_args(argv)).items()})
    args.env_id = args.env_id or (None if args.load else cls.env_id)   # --load: the model's env (load_model)
    return args


def prepare(args, discrete):
    """Seed everything; check now, not after training, that --render and --video can work."""
    seed_everything(args.seed, args.threads)
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or not sys.platform.startswith("linux")
    if args.render and not display:
        raise UsageError("--render needs a display, and none was found (DISPLAY is not set); "
                         "use --video PATH to record the episodes to a file instead")
    for flag, module, package in (("render", "pygame", ""), ("video", "moviepy", "moviepy ")):
        try:
            if getattr(args, flag):
                __import__(module)
        except ImportError:
            raise UsageError(f"--{flag} needs {module}: pip install {package}\"gymnasium[classic-control]\"") from None
    if args.video and not display:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")   # pygame draws off-screen, without a line about XDG
    if (args.render or args.video) and args.env_id:          # (with --load, the model's env is checked at load)
        make_env(args.env_id, discrete, "human" if args.render else "rgb_array").close()


def seed_everything(seed, threads=1):
    """Seed Python, NumPy and torch, and fix torch's CPU threads (1 is fastest for tiny networks)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


# --- Environments -------------------------------------------------------------------------------------------------
def make_env(env_id, discrete, render_mode=None):
    """``gym.make(env_id)``, observations flattened to a vector (one-hot for Discrete), episode statistics recorded
    (info["episode"]: the true return); or one line saying why the env cannot be used. ``discrete``: the script needs
    Discrete actions (True) or a bounded Box (False)."""
    try:
        with warnings.catch_warnings():   # a render_mode missing from the env's metadata: the TypeError below says it
            warnings.filterwarnings("ignore", message=".*is not in the possible render_modes")
            env = gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}))
    except gym.error.NamespaceNotFound as e:
        raise UsageError(f"unknown environment '{env_id}': {e} A namespace's ids are registered by its package: "
                         f"install it and name its module first, e.g. --env-id ale_py:{env_id}") from None
    except gym.error.Error as e:
        raise UsageError(f"unknown environment '{env_id}': {e}") from None
    except ImportError as e:
        raise UsageError(f"environment '{env_id}' needs a package that is not installed: {e}") from None
    except TypeError as e:
        if render_mode and "render_mode" in str(e):   # a constructor without render_mode: it cannot draw itself
            raise UsageError(f"--render and --video need an env that takes render_mode, and {env_id}'s constructor "
                             "does not") from None
        raise
    obs, act = env.observation_space, env.action_space
    try:
        flat = gym.spaces.flatdim(obs) > 0 and not isinstance(obs, gym.spaces.Text)
    except ValueError:
        flat = False
    image = isinstance(obs, gym.spaces.Box) and (len(obs.shape) == 3 or obs.dtype == np.uint8 and len(obs.shape) >= 2)
    problem = (f"image observations {obs}: these scripts have no convolutional network" if image
               else f"observations {obs}, which do not flatten to a fixed-size vector" if not flat
               else f"the action space {act}; this script needs a Discrete action space (sac.py: Box)"
               if discrete and not isinstance(act, gym.spaces.Discrete)
               else f"the action space {act}; SAC needs a continuous (Box) action space: a flat vector of actions "
                    "with finite bounds, low < high (actor_critic.py, a3c.py: Discrete)"
               if not discrete and not (isinstance(act, gym.spaces.Box) and len(act.shape) == 1 and np.isfinite(
                   act.low).all() and np.isfinite(act.high).all() and (act.low < act.high).all()) else None)
    if problem:
        env.close()
        raise UsageError(f"{env_id} has {problem}")
    if not (isinstance(obs, gym.spaces.Box) and len(obs.shape) == 1):
        env = gym.wrappers.FlattenObservation(env)
    return gym.wrappers.RecordEpisodeStatistics(env)


def spaces_of(env):
    """(observation size, number of actions or action dimensions) of an env from make_env."""
    act = env.action_space
    return env.observation_space.shape[0], int(act.n) if isinstance(act, gym.spaces.Discrete) else act.shape[0]


def default_target(args, env):
    """--target-return defaults to the env's reward_threshold (None: no target), --return-window to 100."""
    if args.target_return is None and env.spec is not None:
        args.target_return = env.spec.reward_threshold
    args.return_window = args.return_window or 100


# --- The run folder and its logger: config.json, TensorBoard events, progress lines ----------------------------
class Logger:
    """A new run folder ``<logdir>/<env>__<algo>__<seed>__<time>`` with config.json and TensorBoard events.
    ``episode()`` records a finished episode (x-axis: env steps) and prints a progress line every
    ``print_interval`` episodes; ``returns`` holds the last --return-window returns (finish() sets ``reason``)."""

    def __init__(self, args, algo):
        self.args, self.algo = args, algo
        name = f"{args.env_id.replace('/', '_').replace(':', '_')}__{algo}__{args.seed}__"
        self.dir = make_run_dir(args.logdir, name + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        self.model_path = os.path.join(self.dir, "model.pt")
        self.config = {"algo": algo, **dataclasses.asdict(args)}
        try:
            with open(os.path.join(self.dir, "config.json"), "w") as f:
                json.dump(self.config, f, indent=2)
        except OSError as e:
            raise Failure(f"cannot write the run folder: {os_error(e, self.dir)}") from None
        self.returns, self.recent = collections.deque(maxlen=args.return_window), []
        self.episodes, self.start, self._writer = 0, time.time(), None
        self._mark = (self.start, 0)                    # (time, env step) of the last progress line
        self.outer_error = sys.exc_info()[1]            # an exception the caller is handling is not ours (finish)
        print(f"run folder: {self.dir}  (tensorboard --logdir {args.logdir})")

    @property
    def writer(self):   # started at first use: a3c.py forks its workers before this thread exists
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only training needs it
            self._writer = SummaryWriter(self.dir)
            self._writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" +
                                  "\n".join(f"|{k}|{v}|" for k, v in self.config.items()))
        return self._writer

    def scalars(self, values, step):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def episode(self, ret, length, step):
        """Record one finished episode that ended at env step ``step``."""
        ret, self.episodes = float(ret), self.episodes + 1
        self.returns.append(ret)
        self.recent.append(ret)
        self.scalars({"charts/episodic_return": ret, "charts/episodic_length": length}, step)
        if self.episodes % self.args.print_interval == 0:
            now = time.time()
            sps, self._mark = (step - self._mark[1]) / max(now - self._mark[0], 1e-9), (now, step)
            self.writer.add_scalar("charts/SPS", sps, step)
            print(f"# of episode: {self.episodes}, avg score: {np.mean(self.recent):.1f}  (last "
                  f"{len(self.returns)}: {np.mean(self.returns):.1f})  steps: {step}  {sps:,.0f} steps/s  "
                  f"{now - self.start:.1f}s", flush=True)
            self.recent = []


def solved(log, args):
    """The stopping rule: the last --return-window returns average --target-return or more (never with
    --keep-training)."""
    return (args.target_return is not None and not args.keep_training and len(log.returns) == args.return_window
            and np.mean(log.returns) >= args.target_return)


def make_run_dir(logdir, name):
    """Create a new folder ``logdir/name`` (``name-2``, ``-3``... if taken): race-free, one clear error."""
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise Failure(f"--logdir {logdir} is a file, not a folder")
    try:
        os.makedirs(logdir, exist_ok=True)
        for n in range(1, 1000):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path := os.path.join(logdir, name + (f"-{n}" if n > 1 else "")))  # atomic: never shared
                return path
    except OSError as e:
        raise Failure(f"cannot create a run folder in --logdir {logdir}: {os_error(e)}") from None
    raise Failure(f"cannot create a run folder in --logdir {logdir}: too many runs named {name}")


# --- The end of a run: the divergence guard, and model.pt whatever ended the training loop ------------------------
def check_finite(update, step, **losses):
    """The divergence guard: stop at once when a loss is nan or inf, saying which loss and when."""
    for name, value in losses.items():
        if not math.isfinite(value := float(value)):
            raise Diverged(f"training diverged: {name} is {value} at update {update} (env step {step}); "
                           "try a smaller learning rate, or check the env's rewards and observations")


def all_finite(state):
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def finish(log, step, model, model_kwargs, is_solved, **extra):
    """Called in train()'s ``finally``, whatever ended the loop (the budget, solved, Ctrl-C/SIGTERM, an error), with
    signals held: save model.pt (finite weights only; ``extra`` goes into it too), close TensorBoard, print the
    summary and how to watch the model. After Ctrl-C/SIGTERM it raises KeyboardInterrupt: main() stops there."""
    error = sys.exc_info()[1] if sys.exc_info()[1] is not log.outer_error else None   # what ends train(), if any
    with signals_held():
        log.reason = reason = (f"solved (mean return >= {log.args.target_return:g})" if is_solved else
                  "interrupted" + (" (SIGTERM)" if _signals.received == signal.SIGTERM else "")
                  if stop_requested() or _signals.interrupted or isinstance(error, KeyboardInterrupt) else
                  "stopped by an error" if error else "reached --total-timesteps")
        state, problem = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, None
        note = " (the weights of the last update before the divergence)" if isinstance(error, Diverged) else ""
        try:
            if not all_finite(state):
                note = "model not saved: its weights are not finite"
            else:
                save_model(log.model_path, log.algo, log.args.env_id, model_kwargs, state,
                           dataclasses.asdict(log.args), **extra)
        except OSError as e:
            note, problem = f"model not saved: {os_error(e, log.model_path)}", f"cannot write the model: {os_error(e)}"
        try:
            log.writer.close()   # flushes the events first
        except OSError as e:
            problem = problem or f"cannot write the TensorBoard events: {os_error(e, log.dir)}"
        mean = f"{np.mean(log.returns):.1f}" if log.returns else "n/a"
        print(f"{reason} after {step} env steps, {log.episodes} episodes, {time.time() - log.start:.1f}s; "
              f"mean return of the last {len(log.returns)} episodes: {mean}")
        script = sys.argv[0] if sys.argv[0].endswith(".py") else f"{log.algo}.py"   # as the user typed it
        watch = (f'main(["--load", "{log.dir}", "--render"])' if ipython()    # in a notebook
                 else f"python {script} --load {log.dir} --render")
        print(note if note.startswith("model not saved") else f"model saved to {log.model_path}{note}\n  "
              f"watch it: {watch}", flush=True)
    if problem and error is None:
        raise Failure(problem)
    if stop_requested() and error is None:
        raise KeyboardInterrupt


# --- Saving, loading and evaluating a model -----------------------------------------------------------------------
def save_model(path, algo, env_id, model_kwargs, state_dict, hyperparams=None, **extra):
    """Write ``path`` atomically: a crash, Ctrl-C or full disk never leaves a half-written model file."""
    hyperparams = {k: list(v) if isinstance(v, tuple) else v for k, v in (hyperparams or {}).items()}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".model-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(algo=algo, env_id=env_id, model_kwargs=model_kwargs, state_dict=state_dict,
                            hyperparams=hyperparams, **extra), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise
    return path


def load_model(path, algo, args=None):
    """Read a model.pt (or its run folder's) saved by ``algo``, with one-line errors; sets ``args.env_id``."""
    path = os.path.join(path, "model.pt") if os.path.isdir(path) else path
    if not os.path.isfile(path):
        raise UsageError(f"--load: no such file: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UsageError(f"--load: {path} is not a model file saved by {algo}.py") from None
    if not isinstance(payload, dict) or payload.get("algo") != algo or "state_dict" not in payload:
        found = payload.get("algo") if isinstance(payload, dict) else None
        raise UsageError(f"--load: {path} is not a model saved by {algo}.py" +
                         (f" (it was saved by {found}.py)" if found else ""))
    if not all_finite(payload["state_dict"]):
        raise UsageError(f"--load: {path} holds non-finite weights (nan/inf): that run diverged")
    if args is not None:   # --env-id if given, else the model's env
        args.env_id = args.env_id or payload.get("env_id") or type(args).env_id
    return payload


def evaluate(args, discrete, act, saved):
    """Play --eval-episodes with ``act(obs) -> action`` in the ``saved`` model's env (--render: a window, --video:
    MP4 files), with its spaces checked; print each return and the mean."""
    env = make_env(args.env_id, discrete, "human" if args.render else ("rgb_array" if args.video else None))
    kw, spaces = saved["model_kwargs"], spaces_of(env)
    if (trained := (kw["obs_dim"], kw.get("n_actions", kw.get("act_dim")))) != spaces:
        env.close()
        raise UsageError(f"the model was trained on {trained[0]} observation values and {trained[1]} "
                         f"{'actions' if discrete else 'action dimensions'}, but {args.env_id} has {spaces[0]} and "
                         f"{spaces[1]}")
    if args.video:
        env = gym.wrappers.RecordVideo(env, args.video, episode_trigger=lambda _: True, disable_logger=True)
    returns = []
    try:
        for ep in range(args.eval_episodes):
            obs, _ = env.reset(seed=args.seed + ep)
            ret, done = 0.0, False
            while not done:
                obs, r, terminated, truncated, _ = env.step(act(obs))
                ret, done = ret + float(r), terminated or truncated
            returns.append(ret)
            print(f"eval episode {ep + 1}: return {ret:.1f}", flush=True)
    finally:
        env.close()
    print(f"mean return over {len(returns)} episodes: {np.mean(returns):.1f}" +
          (f"\nvideos written to {args.video}" if args.video else ""))
    return returns
