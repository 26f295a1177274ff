"""Faults a user meets: SIGTERM, Ctrl-C at any moment, bad numbers, divergence, run-folder and disk errors,
--load into another env, and dead or many A3C workers. Each case: one clear line, the right exit status, nothing
lost that training produced, no traceback, no process left behind."""
import dataclasses
import glob
import os
import re
import resource
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch

import a3c
import actor_critic
import common
import sac
from conftest import (ROOT, _as_from_a_terminal, assert_no_process_left, assert_one_line_error, run_script,
                      start_script, wait_for_training)

SCRIPTS = [("actor_critic.py", "actor_critic", []), ("a3c.py", "a3c", ["--num-workers", "2"]), ("sac.py", "sac", [])]
MODULES = {"actor_critic.py": actor_critic, "a3c.py": a3c, "sac.py": sac}


def finish(proc, marker, timeout=30):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert_no_process_left(marker)
    assert "Traceback" not in out + err, out + err
    return out, err


def saved_model(tmp_path, algo):
    (path,) = glob.glob(os.path.join(tmp_path, "*", "model.pt"))
    return common.load_model(path, algo)        # loads only finite weights of the right algorithm


# --------------------------------------------------------------------------------------------- signals
@pytest.mark.parametrize("script, algo, extra", SCRIPTS)
def test_sigterm_saves_the_model_and_exits_143(tmp_path, script, algo, extra):
    proc, marker = start_script(script, "--total-timesteps", "10000000", "--keep-training", "--print-interval", "2",
                                "--logdir", tmp_path, *extra)
    wait_for_training(proc)
    proc.send_signal(signal.SIGTERM)             # to the main process only, as `timeout`, Slurm or `kill` do
    out, err = finish(proc, marker)
    assert proc.returncode == 143, out + err
    assert "interrupted (SIGTERM) after" in out and "model saved to" in out
    saved_model(tmp_path, algo)
    assert glob.glob(os.path.join(tmp_path, "*", "events.out.tfevents.*"))


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_ctrl_c_while_starting_up_is_quiet(tmp_path, delay):
    proc, marker = start_script("a3c.py", "--num-workers", "2", "--logdir", tmp_path)
    time.sleep(delay)                            # during the imports, or while the workers start
    os.killpg(proc.pid, signal.SIGINT)
    finish(proc, marker)
    assert proc.returncode == 130


WHILE_STARTING_WORKERS = """
import os, signal, sys, multiprocessing.context
sys.path.insert(0, {root!r})
import a3c, common
real_start = multiprocessing.context.ForkProcess.start
def start(self):          # a Ctrl-C that arrives exactly while the workers are being started
    os.kill(os.getpid(), signal.SIGINT)
    real_start(self)
multiprocessing.context.ForkProcess.start = start
common.run_cli(a3c.main, ["--num-workers", "2", "--start-method", "fork", "--total-timesteps", "30000",
                          "--keep-training", "--logdir", {logdir!r}])
"""


def test_ctrl_c_while_the_workers_start_is_not_lost(tmp_path):
    """The signal arrives inside Process.start: it must stop the run (130, model saved), not be dropped so that the
    run trains to its end and exits 0."""
    marker = uuid.uuid4().hex
    proc = subprocess.run([sys.executable, "-c", WHILE_STARTING_WORKERS.format(root=ROOT, logdir=str(tmp_path))],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "A3C_TEST_MARKER": marker}, preexec_fn=_as_from_a_terminal)
    assert_no_process_left(marker)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "interrupted after" in proc.stdout
    assert "after 30000 env steps" not in proc.stdout
    saved_model(tmp_path, "a3c")


A_PROGRAM_OF_ITS_OWN = """
import signal, sys
sys.path.insert(0, {root!r})
import {module} as script
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "importing changed SIGINT"
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "importing changed SIGTERM"
try:
    script.train(script.Args(total_timesteps=10**8, keep_training=True, print_interval=2, logdir={logdir!r},
                             **{extra}))
except KeyboardInterrupt:
    print("program: my own KeyboardInterrupt", flush=True)
    raise
finally:
    print("program: my finally ran", flush=True)
"""


@pytest.mark.parametrize("script, algo, extra", [("actor_critic.py", "actor_critic", {}),
                                                 ("a3c.py", "a3c", {"num_workers": 2}), ("sac.py", "sac", {})])
def test_a_program_that_calls_train_keeps_its_own_ctrl_c(tmp_path, script, algo, extra):
    """`from actor_critic import train` in a student's experiment.py: importing installs no handler, and Ctrl-C
    during train() saves the model, then reaches the program as its own KeyboardInterrupt (its finally: runs)."""
    marker = uuid.uuid4().hex
    path = tmp_path / "experiment.py"
    path.write_text(A_PROGRAM_OF_ITS_OWN.format(root=ROOT, module=algo, logdir=str(tmp_path / "runs"), extra=extra))
    proc = subprocess.Popen([sys.executable, str(path)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "A3C_TEST_MARKER": marker}, start_new_session=True,
                            preexec_fn=_as_from_a_terminal)
    wait_for_training(proc)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert_no_process_left(marker)
    assert "program: my own KeyboardInterrupt" in out and "program: my finally ran" in out, out + err
    assert "interrupted after" in out and "model saved to" in out
    assert proc.returncode in (-signal.SIGINT, 130), err      # the program ended as Ctrl-C ends a Python program
    saved_model(tmp_path / "runs", algo)


def test_a_second_ctrl_c_during_shutdown_loses_nothing(tmp_path):
    proc, marker = start_script("a3c.py", "--num-workers", "2", "--total-timesteps", "10000000", "--keep-training",
                                "--print-interval", "2", "--logdir", tmp_path)
    wait_for_training(proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = finish(proc, marker)
    assert proc.returncode == 130 and "model saved to" in out
    saved_model(tmp_path, "a3c")


# ------------------------------------------------------------------------------------------- A3C workers
def test_a_killed_worker_is_reported_and_the_model_kept(tmp_path):
    proc, marker = start_script("a3c.py", "--num-workers", "2", "--total-timesteps", "10000000", "--keep-training",
                                "--print-interval", "2", "--logdir", tmp_path)
    wait_for_training(proc)
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        workers = [int(pid) for pid in f.read().split()]
    assert len(workers) >= 2
    t0 = time.time()
    os.kill(workers[1], signal.SIGKILL)          # what the out-of-memory killer does
    out, err = finish(proc, marker)
    assert time.time() - t0 < 10
    assert proc.returncode == 1
    assert_one_line_error(proc_like(proc, err), "worker", "died (signal 9)")
    saved_model(tmp_path, "a3c")


def proc_like(proc, err):
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def test_many_workers_lose_no_episode(tmp_path):
    """Counter episodes last 3 steps and each rollout is one whole episode: every env step counted belongs to an
    episode that must reach the logs, however many workers stop at once."""
    proc = run_script("a3c.py", "--env-id", "tests.envs:TestCounter-v0", "--num-workers", "16", "--update-interval",
                      "5", "--total-timesteps", "3000", "--logdir", tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    steps, episodes = map(int, re.search(r"after (\d+) env steps, (\d+) episodes", proc.stdout).groups())
    assert steps >= 3000 and episodes * 3 == steps


# ------------------------------------------------------------------------------------------- numbers
def float_fields(module):
    return [f.name for f in dataclasses.fields(module.Args) if f.type is float]


@pytest.mark.parametrize("script", MODULES)
def test_every_float_flag_rejects_nan_and_inf(script, capsys):
    names = float_fields(MODULES[script])
    assert len(names) >= 3
    for name in names:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(SystemExit) as e:
                common.parse_args(MODULES[script].Args, "", ["--" + name.replace("_", "-") + "=" + bad])
            assert e.value.code == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "must be a finite number" in err[0], (name, bad, err)


@pytest.mark.parametrize("script, argv, fragment", [
    ("actor_critic.py", ["--gamma", "1.5"], "must be in [0, 1]"),
    ("actor_critic.py", ["--gamma", "-0.1"], "must be in [0, 1]"),
    ("actor_critic.py", ["--learning-rate", "0"], "must be a positive number"),
    ("actor_critic.py", ["--ent-coef", "-1"], "must be >= 0"),
    ("a3c.py", ["--gamma", "nan"], "finite"),
    ("sac.py", ["--tau", "0"], "must be in (0, 1]"),
    ("sac.py", ["--tau", "1.5"], "must be in (0, 1]"),
    ("sac.py", ["--lr-q", "inf"], "finite"),
    ("actor_critic.py", ["--learning-rat", "0.1"], "unrecognized arguments"),   # no abbreviations
    ("sac.py", ["--total", "2000"], "unrecognized arguments"),
    ("actor_critic.py", ["--env-id", ""], "must not be empty"),
    ("actor_critic.py", ["--n-rollout", "100000", "--total-timesteps", "2000"], "--total-timesteps"),
])
def test_bad_numbers_are_one_clear_line(script, argv, fragment, tmp_path):
    assert_one_line_error(run_script(script, *argv, "--logdir", tmp_path), fragment)
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("script, algo, extra", [
    ("actor_critic.py", "actor_critic", ["--env-id", "tests.envs:TestNanReward-v0"]),
    ("a3c.py", "a3c", ["--env-id", "tests.envs:TestNanReward-v0", "--num-workers", "2"]),
    ("sac.py", "sac", ["--env-id", "tests.envs:TestNanRewardBox-v0", "--learning-starts", "50", "--random-steps", "50"]),
])
def test_divergence_stops_at_once_and_saves_no_nan(tmp_path, script, algo, extra):
    proc = run_script(script, *extra, "--total-timesteps", "100000", "--print-interval", "1", "--logdir", tmp_path)
    assert proc.returncode == 1
    assert_one_line_error(proc, "training diverged:", "is nan at update")
    assert "before the divergence)" in proc.stdout      # it says which weights it kept
    assert torch.isfinite(saved_model(tmp_path, algo)["state_dict"][next(iter(
        saved_model(tmp_path, algo)["state_dict"]))]).all()


def test_load_of_non_finite_weights_is_one_line(tmp_path):
    path = tmp_path / "model.pt"
    common.save_model(str(path), "actor_critic", "CartPole-v1", {"obs_dim": 4, "n_actions": 2},
                      {"w": torch.tensor([float("nan")])})
    assert_one_line_error(run_script("actor_critic.py", "--load", path), "non-finite weights")


# --------------------------------------------------------------------------------- run folder and disk
@pytest.mark.parametrize("script, extra", [("actor_critic.py", []), ("a3c.py", ["--num-workers", "2"])])
def test_a_logdir_that_is_a_file_is_one_line(tmp_path, script, extra):
    (tmp_path / "afile").write_text("")
    proc, marker = start_script(script, "--logdir", tmp_path / "afile", *extra)
    out, err = finish(proc, marker)
    assert proc.returncode == 1
    assert_one_line_error(proc_like(proc, err), "afile", "not a folder")


def test_an_unwritable_logdir_is_one_line():
    assert_one_line_error(run_script("actor_critic.py", "--logdir", "/proc/no/such/place"), "/proc/no/such/place")


def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(tmp_path):
    def limit_file_size():               # writes beyond 30 kB fail with "File too large", as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "actor_critic.py"), "--total-timesteps", "20000",
                           "--print-interval", "1000", "--logdir", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env, preexec_fn=limit_file_size)
    assert_one_line_error(proc, "File too large")
    assert proc.returncode == 1
    assert not glob.glob(os.path.join(tmp_path, "*", ".model-*"))


def test_runs_started_together_in_one_logdir_get_their_own_folders(tmp_path):
    procs = [start_script("actor_critic.py", "--total-timesteps", "800", "--logdir", tmp_path) for _ in range(4)]
    for proc, marker in procs:
        finish(proc, marker, timeout=120)
        assert proc.returncode == 0
    assert len(glob.glob(os.path.join(tmp_path, "CartPole-v1__actor_critic__1__*", "model.pt"))) == 4


# ------------------------------------------------------------------------------- --load into another env
@pytest.mark.parametrize("script, algo, other_env, fragment", [
    ("actor_critic.py", "actor_critic", "Acrobot-v1", "trained on 4 observation values and 2 actions, but "
                                                      "Acrobot-v1 has 6 and 3"),
    ("a3c.py", "a3c", "Acrobot-v1", "trained on 4 observation values and 2 actions, but Acrobot-v1 has 6 and 3"),
    ("sac.py", "sac", "MountainCarContinuous-v0", "trained on 3 observation values and 1 action dimensions, but "
                                                  "MountainCarContinuous-v0 has 2 and 1"),
])
def test_load_into_an_env_with_other_spaces_is_one_line(tmp_path, script, algo, other_env, fragment):
    path = tmp_path / "model.pt"
    module = MODULES[script]
    env_id = module.Args.env_id
    env = common.make_env(env_id, algo != "sac")
    obs_dim, n = common.spaces_of(env)
    kwargs = dict(obs_dim=obs_dim, act_dim=n, hidden=[8], low=[-2.0], high=[2.0]) if algo == "sac" else \
        dict(obs_dim=obs_dim, n_actions=n, hidden=8)
    model = module.PolicyNet(**kwargs) if algo == "sac" else module.ActorCritic(**kwargs)
    common.save_model(str(path), algo, env_id, kwargs, model.state_dict())
    assert_one_line_error(run_script(script, "--load", path, "--env-id", other_env), fragment)
