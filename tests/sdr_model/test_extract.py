"""The best test there is: the same weights loaded two ways give the same outputs."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from timm.models.resnet import ResNet

from sdr_model import create_model, default_preprocessing, extract_subnet, list_models, save_subnet
from tests.sdr_model.helpers import randomize_bn

EXTRACT_PATHS = ["0000", "3333", "0312", "1230", "2222", "3021", "0101", "1111"]


@pytest.fixture(scope="module", params=list_models())
def model(request):
    torch.manual_seed(1)
    m = create_model(request.param)
    randomize_bn(m, seed=1)
    return m.eval()


@pytest.mark.parametrize("path", EXTRACT_PATHS)
def test_extracted_subnet_equals_supernet_on_its_path(model, path):
    x = torch.randn(2, model.config.in_chans, 64, 64)
    subnet = extract_subnet(model, path)
    assert type(subnet) is ResNet
    with torch.no_grad():
        expected = model.forward_features(x, path)
        got = subnet(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # and it is really that path: another path's features differ
    with torch.no_grad():
        other = model.forward_features(x, "1" + path[1:] if path[0] != "1" else "2" + path[1:])
    assert not torch.allclose(other, got, atol=1e-4)


_TIMM_ONLY = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch, timm.models.resnet as tr
    from safetensors import safe_open
    from safetensors.torch import load_file

    file, x_file, out_file = sys.argv[1:4]
    with safe_open(file, framework="pt") as f:
        header = json.loads(f.metadata()["sdr"])
    kwargs = dict(header["timm_kwargs"])
    kwargs["block"] = getattr(tr, kwargs["block"])
    model = tr.ResNet(**kwargs)
    model.load_state_dict(load_file(file), strict=True)
    model.eval()
    with torch.no_grad():
        np.save(out_file, model(torch.from_numpy(np.load(x_file))).numpy())
    assert not any(m == "sdr_model" or m.startswith("sdr_model.") for m in sys.modules), "imported sdr_model"
    print(json.dumps({"path": header["path"], "preprocessing": header["preprocessing"]}))
    """
)


def test_exported_file_loads_in_plain_timm_in_another_process(tmp_path):
    torch.manual_seed(2)
    model = create_model("sdr_tiny")
    randomize_bn(model, seed=2)
    model.eval()
    file = save_subnet(tmp_path / "sub.safetensors", model, "0312", preprocessing=default_preprocessing("sdr_tiny"))
    x = torch.randn(3, 1, 64, 64)
    np.save(tmp_path / "x.npy", x.numpy())
    script = tmp_path / "load_with_timm.py"
    script.write_text(_TIMM_ONLY)
    proc = subprocess.run(
        [sys.executable, str(script), str(file), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["path"] == "0312" and info["preprocessing"]["input_size"] == 64
    with torch.no_grad():
        expected = model.forward_features(x, "0312").numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5, rtol=1e-5)
