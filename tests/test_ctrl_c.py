"""Ctrl-C during training saves the model, flushes TensorBoard and exits with 130, without a traceback."""
import glob
import os
import signal
import subprocess
import sys

import pytest

import common
from conftest import ROOT


@pytest.mark.parametrize("script, algo, env_id", [("actor_critic.py", "actor_critic", "CartPole-v1"),
                                                  ("sac.py", "sac", "Pendulum-v1")])
def test_ctrl_c_saves_the_model_and_exits_cleanly(tmp_path, script, algo, env_id):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, script), "--total-timesteps", "10000000",
                             "--keep-training", "--logdir", str(tmp_path), "--print-interval", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:                    # wait until training has really started
            if line.startswith("# of episode"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "interrupted" in out
    (model_path,) = glob.glob(os.path.join(tmp_path, "*", "model.pt"))
    assert common.load_model(model_path, algo)["env_id"] == env_id
    assert glob.glob(os.path.join(tmp_path, "*", "events.out.tfevents.*"))
    assert not glob.glob(os.path.join(tmp_path, "*", ".model-*"))   # no half-written temporary file
