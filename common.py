"""Shared plumbing of actor_critic.py, a3c.py and sac.py (copy it next to the script you use); no algorithm lives
here. The command line (or a notebook's main([...])) from a script's ``Args``, envs and their checks, the run folder,
Ctrl-C/SIGTERM, the divergence guard, evaluation of a saved model, and a3c.py's worker processes."""
import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import multiprocessing.connection
import os
import queue as queue_lib
import random
import signal
import sys
import tempfile
import threading
import time
import traceback


def _quiet_exit(signum, frame):   # Ctrl-C/SIGTERM while torch loads: nothing is trained yet, leave quietly
    print("interrupted", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def ipython():   # the IPython shell this code runs in (a Jupyter or Colab kernel, the ipython console), or None
    return getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()


if "pytest" not in sys.modules and hasattr(sys.modules.get("__main__"), "__file__") and not ipython():  # a script
    for _sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(_sig) is not signal.SIG_IGN:   # a3c's workers inherit "ignore" and keep it
            signal.signal(_sig, _quiet_exit)

import gymnasium as gym  # noqa: E402  (the slow imports come after the handlers)
import numpy as np  # noqa: E402
import torch  # noqa: E402

RMS_FIELDS = ("mean", "var", "count")   # the observation statistics saved in model.pt (--norm-obs)


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit status 2."""


class Failure(Exception):
    """The run cannot go on (divergence, a dead worker, a disk that refuses writes): one line, exit status 1."""


class Diverged(Failure):
    """A loss became nan or inf: the run saves the weights of its last progress line, if it has them."""


# --- Signals: the first Ctrl-C/SIGTERM asks the training loop to stop; saving is never interrupted ---------------
class _signals:
    received = 0        # the first SIGINT/SIGTERM received (0: none)
    graceful = False    # a training loop is running: it polls stop_requested() and stops itself
    shielded = False    # the model is being saved or workers stopped: note signals, act on none


def _on_signal(signum, frame):
    first, _signals.received = not _signals.received, _signals.received or signum
    if not _signals.shielded and not (_signals.graceful and first):
        raise KeyboardInterrupt   # outside training, or a second signal the loop has not acted on yet


def stop_requested():
    return bool(_signals.received)


# --- Running main: on the command line, or in a notebook (Jupyter, Colab), whose kernel is left as it was ---------
def command(main):
    """``@common.command`` on ``main(argv=None)``: from the script's __main__ block or a notebook, run_cli runs it."""
    return lambda argv=None: run_cli(main, argv) if main.__module__ == "__main__" or ipython() else main(argv)


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
    threading.excepthook = lambda a: None if issubclass(a.exc_type, OSError) else sys.__excepthook__(
        a.exc_type, a.exc_value, a.exc_traceback)   # TensorBoard's writer thread: its OSError is reported below
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
    if not notebook:
        sys.exit(code)


def os_error(e, path=None):
    return f"{getattr(e, 'filename', None) or path}: {e.strerror or e}" if (e.filename or path) else str(e)


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
    return_window: int = hp(None, "episodes averaged for --target-return (default: 10 on Pendulum-v1, else 100)",
                            range="(0, inf)")
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


def prepare(args):
    """Seed everything; check now, not after training, that --render and --video can work."""
    seed_everything(args.seed, args.threads)
    method = getattr(args, "start_method", "fork")   # a3c.py: spawn and forkserver workers import the script's file
    if method != "fork" and type(args).__module__ == "__main__" and not hasattr(sys.modules["__main__"], "__file__"):
        raise UsageError(f"--start-method {method} needs a3c.py as a file (not a cell): %run a3c.py, or fork")
    if args.render and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                                  os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError("--render needs a display, and none was found (DISPLAY is not set); "
                         "use --video PATH to record the episodes to a file instead")
    for flag, module, package in (("render", "pygame", ""), ("video", "moviepy", "moviepy ")):
        try:
            if getattr(args, flag):
                __import__(module)
        except ImportError:
            raise UsageError(f"--{flag} needs {module}: pip install {package}\"gymnasium[classic-control]\"") from None


def seed_everything(seed, threads=1):
    """Seed Python, NumPy and torch, and fix torch's CPU threads (1 is fastest for tiny networks)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


# --- Environments -------------------------------------------------------------------------------------------------
def make_env(env_id, discrete, render_mode=None, obs_rms=None, norm_obs=False):
    """``gym.make(env_id)``, observations flattened to a vector (one-hot for Discrete), episode statistics recorded,
    optionally normalised (``obs_rms``: saved statistics, applied frozen); or one line saying why the env cannot be
    used. ``discrete``: the script needs Discrete actions (True) or a bounded Box (False)."""
    try:
        env = gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}))  # some envs take no such arg
    except gym.error.NamespaceNotFound as e:
        raise UsageError(f"unknown environment '{env_id}': {e} A namespace's ids are registered by its package: "
                         f"install it and name its module first, e.g. --env-id ale_py:{env_id}") from None
    except gym.error.Error as e:
        raise UsageError(f"unknown environment '{env_id}': {e}") from None
    except ImportError as e:
        raise UsageError(f"environment '{env_id}' needs a package that is not installed: {e}") from None
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
                    "with finite bounds (actor_critic.py, a3c.py: Discrete)"
               if not discrete and not (isinstance(act, gym.spaces.Box) and len(act.shape) == 1
                                        and np.isfinite(act.low).all() and np.isfinite(act.high).all()) else None)
    if problem:
        env.close()
        raise UsageError(f"{env_id} has {problem}")
    if not (isinstance(obs, gym.spaces.Box) and len(obs.shape) == 1):
        env = gym.wrappers.FlattenObservation(env)
    env = gym.wrappers.RecordEpisodeStatistics(env)    # info["episode"]: the true return, before any scaling
    if norm_obs or obs_rms is not None:
        env = gym.wrappers.NormalizeObservation(env)
        if obs_rms is not None:
            env.obs_rms.mean, env.obs_rms.var, env.obs_rms.count = (obs_rms[k].numpy() for k in RMS_FIELDS)
            env.update_running_mean = False
    return env


def make_vector_env(env_id, n, norm_obs=False):
    """``n`` envs from make_env stepped together; SAME_STEP autoreset: info["final_obs"] is an episode's real last
    observation. With ``norm_obs`` all share one set of statistics, returned to be saved with the model (Gymnasium's
    vector NormalizeObservation would need NEXT_STEP autoreset)."""
    envs = gym.vector.SyncVectorEnv([lambda: make_env(env_id, True, norm_obs=norm_obs)] * n,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    for env in envs.envs[1:] if norm_obs else ():
        env.obs_rms = envs.envs[0].obs_rms
    return envs, envs.envs[0].obs_rms if norm_obs else None


def spaces_of(env):
    """(observation size, number of actions or action dimensions) of an env from make_env."""
    act = env.action_space
    return env.observation_space.shape[0], int(act.n) if isinstance(act, gym.spaces.Discrete) else act.shape[0]


def default_target(args, env):
    """--target-return defaults to the env's reward_threshold; Pendulum-v1 has none: -200 over 10 episodes."""
    pendulum = env.spec is not None and env.spec.id == "Pendulum-v1"
    if args.target_return is None and env.spec is not None:
        args.target_return = -200.0 if pendulum else env.spec.reward_threshold
    args.return_window = args.return_window or (10 if pendulum else 100)


def check_device(device):
    """--device: cpu, or cuda where this torch build and machine have it; else one line."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"--device: unknown device '{device}' (use cpu or cuda)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                         f"cuda build: {torch.version.cuda}); use --device cpu")


# --- Run folder, TensorBoard, progress line, and saving whatever ends the training loop ---------------------------
class RunLogger:
    """A run folder ``<logdir>/<env>__<algo>__<seed>__<time>`` with TensorBoard events, config.json and model.pt.
    ``episode()`` records a finished episode (x-axis: env steps) and prints a progress line every
    ``print_interval`` episodes; ``done()`` tells the loop to stop (solved, or Ctrl-C/SIGTERM)."""

    def __init__(self, args, algo, model_kwargs):
        self.args, self.algo, self.model_kwargs = args, algo, model_kwargs
        name = f"{args.env_id.replace('/', '_').replace(':', '_')}__{algo}__{args.seed}__"
        self.dir = make_run_dir(args.logdir, name + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        self.config = {"algo": algo, **dataclasses.asdict(args)}
        try:
            with open(os.path.join(self.dir, "config.json"), "w") as f:
                json.dump(self.config, f, indent=2)
        except OSError as e:
            raise Failure(f"cannot write the run folder: {os_error(e, self.dir)}") from None
        self.returns, self.recent, self.episodes, self.step, self.start = [], [], 0, 0, time.time()
        self.reason, self.solved, self._sps_mark = "reached --total-timesteps", False, (self.start, 0)
        self.snapshot = self.model = self.obs_rms = self._writer = None
        self.model_path = os.path.join(self.dir, "model.pt")
        print(f"run folder: {self.dir}  (tensorboard --logdir {args.logdir})")

    def elapsed(self):
        return time.time() - self.start

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
        a, ret = self.args, float(ret)
        self.episodes, self.step = self.episodes + 1, max(self.step, step)
        self.returns = (self.returns + [ret])[-a.return_window:]
        self.recent.append(ret)
        self.scalars({"charts/episodic_return": ret, "charts/episodic_length": length}, step)
        if self.episodes % a.print_interval == 0:
            now = time.time()
            sps, self._sps_mark = (step - self._sps_mark[1]) / max(now - self._sps_mark[0], 1e-9), (now, step)
            self.writer.add_scalar("charts/SPS", sps, step)
            print(f"# of episode: {self.episodes}, avg score: {np.mean(self.recent):.1f}  (last "
                  f"{len(self.returns)}: {np.mean(self.returns):.1f})  steps: {step}  {sps:,.0f} steps/s  "
                  f"{now - self.start:.1f}s", flush=True)
            self.recent = []
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if self.model else {}
            if state and all_finite(state):
                self.snapshot = (self.step, state)      # the last finite weights: what a diverged run saves
        if (a.target_return is not None and not a.keep_training and not self.solved
                and len(self.returns) == a.return_window and np.mean(self.returns) >= a.target_return):
            self.solved, self.reason = True, f"solved (mean return >= {a.target_return:g})"

    def done(self):
        """True once the loop should stop: solved (unless --keep-training), or Ctrl-C/SIGTERM received."""
        return self.solved or stop_requested()

    @contextlib.contextmanager
    def training(self, model, obs_rms=None):
        """Around the training loop: Ctrl-C/SIGTERM make ``done()`` true (a second one stops at once); whatever ends
        the loop, model.pt is saved (finite weights only) and the summary printed, with signals held off."""
        self.model, self.obs_rms, error = model, obs_rms, None
        _signals.graceful = True
        try:
            yield self
        except KeyboardInterrupt:    # a second Ctrl-C, or the interrupt button when a notebook calls train() itself
            self.reason = "interrupted"
        except BaseException as e:
            error = e
        finally:
            _signals.graceful, _signals.shielded = False, True
            try:
                error = self._finish(error)
            finally:
                _signals.shielded = False
        if error is not None:
            raise error
        if stop_requested():
            raise KeyboardInterrupt

    def _finish(self, error):
        if stop_requested():
            self.reason = "interrupted" + (" (SIGTERM)" if _signals.received == signal.SIGTERM else "")
        elif error is not None:
            self.reason = "stopped by an error"
        state, note = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}, ""
        if self.snapshot and isinstance(error, Diverged) or not all_finite(state):
            state, note = self.snapshot[1] if self.snapshot else None, (
                f" (the weights of env step {self.snapshot[0]}, before the divergence)" if self.snapshot else "")
        rms = self.obs_rms and {k: torch.tensor(np.asarray(getattr(self.obs_rms, k), np.float64)) for k in RMS_FIELDS}
        try:
            if state is None:
                note = "model not saved: its weights are not finite and no earlier ones were kept"
            else:
                save_model(self.model_path, self.algo, self.args.env_id, self.model_kwargs, state,
                           dataclasses.asdict(self.args), obs_rms=rms)
        except OSError as e:
            note, error = f"model not saved: {os_error(e, self.model_path)}", error or Failure(
                f"cannot write the model: {os_error(e, self.model_path)}")
        try:
            self.writer.close()   # flushes the events first
        except OSError as e:
            error = error or Failure(f"cannot write the TensorBoard events: {os_error(e, self.dir)}")
        mean = f"{np.mean(self.returns):.1f}" if self.returns else "n/a"
        print(f"{self.reason} after {self.step} env steps, {self.episodes} episodes, {self.elapsed():.1f}s; "
              f"mean return of the last {len(self.returns)} episodes: {mean}")
        script = sys.argv[0] if sys.argv[0].endswith(".py") else f"{self.algo}.py"   # as the user typed it
        watch = (f'main(["--load", "{self.dir}", "--render"])' if ipython()    # in a notebook
                 else f"python {script} --load {self.dir} --render")
        print(note if note.startswith("model not saved") else f"model saved to {self.model_path}{note}\n  "
              f"watch it: {watch}")
        return error


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


def all_finite(state):
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def check_finite(update, step, **losses):
    """The divergence guard: stop at once when a loss is nan or inf, saying which loss and when."""
    for name, value in losses.items():
        if not math.isfinite(value := float(value)):
            raise Diverged(f"training diverged: {name} is {value} at update {update} (env step {step}); "
                           "try a smaller learning rate, or check the env's rewards and observations")


# --- Saving, loading and evaluating a model -----------------------------------------------------------------------
def save_model(path, algo, env_id, model_kwargs, state_dict, hyperparams=None, obs_rms=None):
    """Write ``path`` atomically: a crash, Ctrl-C or full disk never leaves a half-written model file."""
    hyperparams = {k: list(v) if isinstance(v, tuple) else v for k, v in (hyperparams or {}).items()}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".model-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(algo=algo, env_id=env_id, model_kwargs=model_kwargs, state_dict=state_dict,
                            obs_rms=obs_rms, hyperparams=hyperparams), f)
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
    MP4 files), with its spaces checked and its frozen observation statistics; print each return and the mean."""
    env = make_env(args.env_id, discrete, "human" if args.render else ("rgb_array" if args.video else None),
                   obs_rms=saved.get("obs_rms"))
    kw, (obs_dim, n_act) = saved["model_kwargs"], spaces_of(env)
    if (kw["obs_dim"], kw.get("n_actions", kw.get("act_dim"))) != (obs_dim, n_act):
        env.close()
        raise UsageError(f"the model was trained on {kw['obs_dim']} observation values and "
                         f"{kw.get('n_actions', kw.get('act_dim'))} {'actions' if discrete else 'action dimensions'}"
                         f", but {args.env_id} has {obs_dim} and {n_act}")
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


# --- Worker processes (a3c.py) ------------------------------------------------------------------------------------
class Workers:
    """a3c.py's worker processes ``target(rank, *args, stop, queue)``. They ignore Ctrl-C and SIGTERM (which reach
    the whole process group): the main process stops them with ``stop``; an exception arrives as an "error" message."""

    def __init__(self, ctx, n, target, args):
        self.stop, self.queue = ctx.Event(), ctx.Queue()
        old = [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)]
        try:
            self.procs = [ctx.Process(target=_worker_main, args=(target, rank, *args, self.stop, self.queue),
                                      name=f"worker-{rank}", daemon=True) for rank in range(n)]
            for p in self.procs:
                p.start()
        finally:
            for s, handler in zip((signal.SIGINT, signal.SIGTERM), old):
                signal.signal(s, handler)

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
            raise Failure(f"worker {rank} died ({f'signal {-code}' if code < 0 else f'exit status {code}'})")
        return msgs

    def stop_all(self, timeout=5.0):
        """Stop every worker (killed after ``timeout`` s); returns all messages: no finished episode is lost."""
        self.stop.set()
        msgs, deadline, _signals.shielded = [], time.monotonic() + timeout, True   # a 2nd Ctrl-C leaves no orphans
        try:
            while any(p.is_alive() for p in self.procs) and time.monotonic() < deadline:
                msgs += self.messages()
                multiprocessing.connection.wait([p.sentinel for p in self.procs if p.is_alive()], timeout=0.05)
            for p in self.procs:
                if p.is_alive():
                    p.kill()
                p.join()
        finally:
            _signals.shielded = False
        return msgs + self.messages()


def _worker_main(target, rank, *args):
    stop, queue = args[-2:]
    parent = multiprocessing.parent_process()     # never outlive a main process that was killed hard
    threading.Thread(target=lambda: (parent.join(), stop.set()), daemon=True).start()
    try:
        target(rank, *args)
    except BaseException as e:  # noqa: BLE001  (the main process reports it and exits non-zero)
        stop.set()
        queue.put(("error", rank, str(e) if isinstance(e, Failure) else f"{type(e).__name__}: {e}",
                   traceback.format_exc(), isinstance(e, Diverged)))
        queue.close()
        queue.join_thread()
        sys.exit(1)
