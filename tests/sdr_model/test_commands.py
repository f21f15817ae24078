"""`sdr init`, `sdr export`, `sdr info` as a user runs them."""

import subprocess
import sys

import pytest
import torch

from sdr_model import load_checkpoint, load_subnet


def sdr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sdr_model.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny.safetensors"
    proc = sdr("init", "--preset", "sdr_tiny", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_init_export_info(ckpt, tmp_path):
    sub = tmp_path / "sub.safetensors"
    proc = sdr("export", str(ckpt), "--path", "0312", "-o", str(sub))
    assert proc.returncode == 0, proc.stderr
    model, _ = load_checkpoint(ckpt)
    subnet, _meta = load_subnet(sub)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), model.forward_features(x, "0312"), atol=1e-5, rtol=1e-5)
    by_id = tmp_path / "by_id.safetensors"
    assert sdr("export", str(ckpt), "--path", "54", "-o", str(by_id)).returncode == 0
    assert load_subnet(by_id)[1].path == "0312"
    info = sdr("info", str(ckpt))
    assert info.returncode == 0 and "256 paths" in info.stdout and "git_commit" in info.stdout


@pytest.mark.parametrize(
    ("path", "message"), [("0412", "group 4"), ("abc", "must be 4 digits"), ("256", "out of range")]
)
def test_export_bad_path_is_a_clear_error(ckpt, tmp_path, path, message):
    out = tmp_path / "x.safetensors"
    proc = sdr("export", str(ckpt), "--path", path, "-o", str(out))
    assert proc.returncode == 2 and message in proc.stderr
    assert not out.exists()


def test_info_on_a_pickle_names_the_file(tmp_path):
    bad = tmp_path / "weights.pth"
    torch.save({"a": torch.ones(1)}, bad)
    proc = sdr("info", str(bad))
    assert proc.returncode == 2 and "weights.pth" in proc.stderr and "safetensors" in proc.stderr
