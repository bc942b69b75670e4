"""Training resumed in a new process after a crash matches training straight.

Every head's optimizer state (momentum, iterations), nu and the
learning-rate schedule position must survive `BackupAndRestore`.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")


def _run(mode, backup_dir, output, backprop, share):
    return subprocess.run(
        [sys.executable, WORKER, mode, str(backup_dir), str(output), backprop, share],
        capture_output=True,
        text=True,
        timeout=300,
    )


# One case only: each run starts a fresh Python process with TensorFlow. The
# shared-state and single-pass variants of the saved optimizer state are
# covered in-process by test_serialization.py.
@pytest.mark.parametrize("backprop,share", [("mwbp", "per_head")])
def test_resume_after_crash_matches_straight_run(tmp_path, backprop, share):
    straight = _run("straight", tmp_path / "a", tmp_path / "straight.npz", backprop, share)
    assert straight.returncode == 0, straight.stderr[-2000:]

    crashed = _run("crash", tmp_path / "b", tmp_path / "unused.npz", backprop, share)
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    assert not (tmp_path / "unused.npz").exists()

    resumed = _run("resume", tmp_path / "b", tmp_path / "resumed.npz", backprop, share)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected = np.load(tmp_path / "straight.npz")
    actual = np.load(tmp_path / "resumed.npz")
    assert sorted(expected.files) == sorted(actual.files)
    assert int(actual["main_iterations"]) == 12
    for name in expected.files:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
