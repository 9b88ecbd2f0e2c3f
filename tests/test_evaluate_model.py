"""Model submissions (cardbench.evaluate): model.yaml validation, ONNX runs with onnxruntime,
limits, and the exported baseline on the real Sunnybrook sample.

Expected values: the torch baseline's own predictions (``cardbench baseline predict``) and their
scores (``cardbench score``); torch's ``interpolate`` for the resize filter; tiny ONNX graphs built
with onnx.helper whose output is worked out by hand.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cardbench.cli import app
from cardbench.evaluate import Limits, ModelCardError, evaluate_model, load_model_card
from cardbench.evaluate.modelcard import parse_model_card
from cardbench.evaluate.preprocess import placement, resize_matrix
from cardbench.evaluate.runners import ModelRunError, OnnxRunner
from helpers import LazyModule, has_modules

pytestmark = pytest.mark.skipif(not has_modules("onnx", "onnxruntime"),
                                reason="needs onnx and onnxruntime (the [onnx] extra)")
# imported when a test first uses them, not when the file is collected (tests/helpers.py)
onnx = LazyModule("onnx")
helper = LazyModule("onnx.helper")


CARD = {"cardbench_model_card": 1, "name": "tiny", "format": "onnx",
        "input": {"channels": 1, "size": [64, 64], "fit": "resize-pad", "interpolation": "bilinear",
                  "intensity": {"method": "min-max", "over": "image"}},
        "output": {"kind": "logits", "labels": ["background", "LV", "MY"]},
        "postprocessing": {"argmax": True}}


@pytest.fixture(scope="module")
def sunnybrook(sunnybrook_prepared):
    return sunnybrook_prepared  # prepared once per test run (conftest); read only


def _graph(path: Path, *, in_shape=("N", 1, 64, 64), out_channels=3, op="threshold", out_shape=None) -> Path:
    """A tiny ONNX model: logits per class from the image x in [0, 1].

    threshold: background = 0.5, LV = x, MY = 1 - x  -> LV where x > 0.5, MY where x < 0.5 (hand-checkable).
    nan: the output is x * NaN. shape: returns a tensor of ``out_shape``.
    """
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(in_shape))
    nodes, inits = [], []
    if op == "threshold":
        inits += [helper.make_tensor("half", onnx.TensorProto.FLOAT, [1, 1, 1, 1], [0.5]),
                  helper.make_tensor("one", onnx.TensorProto.FLOAT, [1, 1, 1, 1], [1.0]),
                  helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1, 1, 1, 1], [0.0])]
        nodes += [helper.make_node("Mul", ["x", "zero"], ["z"]),
                  helper.make_node("Add", ["z", "half"], ["bg"]),
                  helper.make_node("Sub", ["one", "x"], ["my"])]
        chans = ["bg", "x", "my"][:out_channels] + ["bg"] * max(0, out_channels - 3)
        nodes.append(helper.make_node("Concat", chans, ["y"], axis=1))
        y_shape = [in_shape[0], out_channels, in_shape[2], in_shape[3]]
    elif op == "nan":
        inits.append(helper.make_tensor("nan", onnx.TensorProto.FLOAT, [1, 1, 1, 1], [float("nan")]))
        nodes += [helper.make_node("Mul", ["x", "nan"], ["n1"]), helper.make_node("Concat", ["n1"] * 3, ["y"], axis=1)]
        y_shape = [in_shape[0], 3, in_shape[2], in_shape[3]]
    else:  # output of another spatial size than declared at run time (dynamic output shape)
        inits.append(helper.make_tensor("k", onnx.TensorProto.INT64, [4], [1, 1, 2, 2]))
        nodes += [helper.make_node("Concat", ["x", "x", "x"], ["c"], axis=1),
                  helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
        y_shape = out_shape or ["N", 3, "h", "w"]
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(y_shape))
    g = helper.make_graph(nodes, "tiny", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _card(tmp_path: Path, d: dict, name="model.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


# ------------------------------------------------------------------ resize filter, geometry
def test_resize_matrix_equals_torch_interpolate():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 1, 37, 50)).astype(np.float32)
    for (h, w), aa in (((17, 23), True), ((80, 64), False), ((37, 50), False)):
        want = F.interpolate(torch.from_numpy(a), size=(h, w), mode="bilinear", align_corners=False,
                             antialias=aa)[0, 0].numpy()
        got = resize_matrix(37, h) @ a[0, 0].astype(np.float64) @ resize_matrix(50, w).T
        assert np.allclose(got, want, atol=1e-5)
    want = F.interpolate(torch.from_numpy(a), size=(20, 70), mode="nearest")[0, 0].numpy()
    got = resize_matrix(37, 20, "nearest") @ a[0, 0] @ resize_matrix(50, 70, "nearest").T
    assert np.array_equal(got, want)


def test_placement_by_hand():
    g = placement(100, 50, (64, 64), "resize-pad")  # scale 0.64 -> 64 x 32, centred at column 16
    assert (g.nh, g.nw, g.dst_r0, g.dst_c0, g.n_c) == (64, 32, 0, 16, 32)
    g = placement(100, 50, (64, 64), "crop")  # rows 18..82 kept; columns padded at 7
    assert (g.src_r0, g.dst_r0, g.n_r, g.src_c0, g.dst_c0, g.n_c) == (18, 0, 64, 0, 7, 50)
    with pytest.raises(ValueError, match="larger than the model's input"):
        placement(100, 50, (64, 64), "pad")


# ------------------------------------------------------------------ model.yaml
@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="pickle"), "format 'pickle' is not supported"),
    (lambda d: d["input"].update(channels=0), "input.channels must be an integer"),
    (lambda d: d["input"].update(size=[64]), "input.size must be"),
    (lambda d: d["input"].update(fit="stretch"), "input.fit 'stretch'"),
    (lambda d: d["input"]["intensity"].update(method="percentile", p_low=99, p_high=1), "p_low/p_high"),
    (lambda d: d["output"].update(labels=["LV", "background"]), "channel 0 must be background"),
    (lambda d: d["output"].update(kind="scores"), "output.kind 'scores'"),
    (lambda d: d["postprocessing"].update(argmax=False), "argmax must be true"),
    (lambda d: d.update(run="rm -rf /"), "unknown key"),
    (lambda d: d.pop("input"), "input is missing"),
])
def test_invalid_model_cards_are_one_line(tmp_path, change, message):
    d = copy.deepcopy(CARD)
    change(d)
    with pytest.raises(ModelCardError, match=message) as e:
        load_model_card(_card(tmp_path, d))
    assert "\n" not in str(e.value) and "model.yaml" in str(e.value)


def test_yaml_tags_and_huge_cards_are_refused(tmp_path):
    p = tmp_path / "model.yaml"
    p.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ModelCardError, match="not valid YAML"):
        load_model_card(p)
    p.write_text("name: " + "x" * 70000)
    with pytest.raises(ModelCardError, match="larger than 64 KiB"):
        load_model_card(p)


# ------------------------------------------------------------------ ONNX models checked before any image
@pytest.mark.parametrize("kwargs, card_change, message", [
    ({"in_shape": ("N", 3, 64, 64)}, None, r"input 'x' has shape \['N', 3, 64, 64\] but"),
    ({"in_shape": ("N", 1, 32, 32)}, None, "but .* declares"),
    ({"out_channels": 4}, None, "output 'y' has shape"),
    ({"in_shape": (4, 1, 64, 64)}, None, "fixed batch size 4"),
    ({}, lambda d: d["output"].update(labels=["background", "LV"]), "output 'y' has shape"),
])
def test_models_whose_declared_shapes_do_not_fit_are_refused(tmp_path, kwargs, card_change, message):
    d = copy.deepcopy(CARD)
    if card_change:
        card_change(d)
    card = load_model_card(_card(tmp_path, d))
    with pytest.raises(ModelCardError, match=message) as e:
        OnnxRunner(_graph(tmp_path / "m.onnx", **kwargs), card)
    assert "\n" not in str(e.value)


def test_not_an_onnx_file_and_size_limit(tmp_path):
    card = load_model_card(_card(tmp_path, CARD))
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x80\x04pickle" * 10)
    with pytest.raises(ModelCardError, match="not a model onnxruntime can load"):
        OnnxRunner(bad, card)
    m = _graph(tmp_path / "ok.onnx")
    with pytest.raises(ModelCardError, match="over the limit"):
        OnnxRunner(m, card, Limits(max_model_bytes=100))


def test_cli_refuses_before_reading_images(tmp_path):
    """The reference does not even exist: the card/model check comes first and exits 2 with one line."""
    d = copy.deepcopy(CARD)
    d["input"]["channels"] = 3
    r = CliRunner().invoke(app, ["evaluate-model", str(_graph(tmp_path / "m.onnx")), "--model-card",
                                 str(_card(tmp_path, d)), "--reference", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and "input 'x' has shape" in r.output


# ------------------------------------------------------------------ running on real images
def test_threshold_model_on_real_images_by_hand(sunnybrook, tmp_path):
    card = load_model_card(_card(tmp_path, {**CARD, "input": {**CARD["input"], "size": [256, 256],
                                                                "fit": "pad"}}))
    ev = evaluate_model(_graph(tmp_path / "m.onnx", in_shape=("N", 1, 256, 256)), sunnybrook, card, split="test",
                        predictions_out=tmp_path / "pred", protocol="ankenbrand2021")
    # the Sunnybrook images are 256 x 256: no resize, so the label is LV where the slice's min-max
    # normalised intensity > 0.5, MY where < 0.5, background where exactly 0.5
    for p in sorted((tmp_path / "pred").rglob("*.nii.gz")):
        img = np.asarray(nib.load(str(sunnybrook / "images" / p.parent.name / p.name)).dataobj, dtype=np.float32)
        assert img.shape[:2] == (256, 256)
        lo = img.min(axis=(0, 1), keepdims=True)
        x = (img - lo) / (img.max(axis=(0, 1), keepdims=True) - lo)
        want = np.where(x > 0.5, 1, np.where(x < 0.5, 2, 0))
        got = np.asarray(nib.load(str(p)).dataobj)
        assert (got == want).mean() > 0.9999
    assert ev.n_volumes == 4 and ev.result.summary["submission"]["name"] == "tiny"
    assert set(ev.result.aggregates["metric"]) >= {"dice"}


def test_nan_and_wrong_shape_outputs_stop_the_run(sunnybrook, tmp_path):
    card = load_model_card(_card(tmp_path, CARD))
    lb = tmp_path / "lb"
    lb.mkdir()
    with pytest.raises(ModelRunError, match="NaN or infinite"):
        evaluate_model(_graph(tmp_path / "nan.onnx", op="nan"), sunnybrook, card)
    with pytest.raises(ModelRunError, match=r"output has shape \[\d+, 3, 32, 32\], expected"):
        evaluate_model(_graph(tmp_path / "shape.onnx", op="shape", in_shape=("N", 1, "H", "W")), sunnybrook, card)
    r = CliRunner().invoke(app, ["evaluate-model", str(tmp_path / "nan.onnx"), "--model-card",
                                 str(_card(tmp_path, CARD)), "--reference", str(sunnybrook), "--leaderboard", str(lb),
                                 "--name", "nan"])
    assert r.exit_code == 2 and "NaN" in r.output and "Traceback" not in r.output
    assert not any(lb.rglob("summary.json"))  # nothing published


def test_time_limit_stops_the_run(sunnybrook, tmp_path):
    card = load_model_card(_card(tmp_path, CARD))
    with pytest.raises(ModelRunError, match="total time limit"):
        evaluate_model(_graph(tmp_path / "m.onnx"), sunnybrook, card, limits=Limits(total_seconds=1e-9))


# ------------------------------------------------------------------ the exported baseline (torch)
@pytest.fixture(scope="module")
def exported(sunnybrook, tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("segmentation_models_pytorch")
    from cardbench.baselines.config import load_config
    from cardbench.baselines.model import build_model, save_checkpoint

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("export")
    cfg = load_config("cpu-smoke", {"image_size": 64, "decoder_channels": [32, 16, 16, 8, 8]})
    torch.manual_seed(0)
    ck = save_checkpoint(d / "model.safetensors", build_model(cfg, pretrained=False), cfg)
    r = CliRunner().invoke(app, ["baseline", "export-onnx", str(ck), "--out", str(d / "model.onnx")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["baseline", "predict", str(ck), "--dataset", str(sunnybrook), "--split", "test",
                                 "--out", str(d / "torch_pred")])
    assert r.exit_code == 0, r.output
    return d


@pytest.mark.torch
def test_onnx_predictions_equal_torch_predictions(exported, sunnybrook):
    from cardbench.evaluate.evaluate import reference_volumes
    from cardbench.evaluate.runners import open_runner

    card = load_model_card(exported / "model.yaml")
    assert card.format == "onnx" and card.size == (64, 64) and card.labels == ("background", "LV", "MY")
    runner = open_runner(exported / "model.onnx", card)
    vols = reference_volumes(sunnybrook, "test")
    assert len(vols) == 4
    agree = total = 0
    for subject, img, lab in vols:
        a = np.asarray(nib.load(str(exported / "torch_pred" / subject / lab.name)).dataobj)
        b = runner.predict(np.asarray(nib.load(str(img)).dataobj, dtype=np.float32), 1e18)
        agree += int((a == b).sum())
        total += a.size
        assert len(np.unique(a)) > 1  # the untrained model does not predict one class everywhere
    assert agree / total >= 0.999


@pytest.mark.torch
def test_evaluate_model_scores_equal_predict_then_score(exported, sunnybrook, prefilled_dir, tmp_path):
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    proto = ["--protocol", "ankenbrand2021"]  # Dice/IoU per image: fast to score
    r = CliRunner().invoke(app, ["score", str(exported / "torch_pred"), "--reference", str(sunnybrook), "--split",
                                 "test", "--out", str(tmp_path / "scored"), *proto])
    assert r.exit_code == 0, r.output
    import pandas as pd

    want = pd.read_csv(tmp_path / "scored" / "aggregates.csv")
    for model, card in ((exported / "model.onnx", exported / "model.yaml"), (exported / "model.safetensors", None)):
        out = tmp_path / f"ev_{model.suffix[1:]}"
        args = ["evaluate-model", str(model), "--reference", str(sunnybrook), "--split", "test", "--out", str(out),
                "--leaderboard", str(lb), "--name", f"unet-{model.suffix[1:]}", *proto]
        r = CliRunner().invoke(app, args + (["--model-card", str(card)] if card else []))
        assert r.exit_code == 0, r.output
        got = pd.read_csv(out / "aggregates.csv")
        assert got[["grouping", "group", "class", "metric"]].equals(want[["grouping", "group", "class", "metric"]])
        assert np.allclose(got["mean"], want["mean"], atol=1e-3 if card else 0.0, equal_nan=True)
    from cardbench.benchmark.leaderboard import Leaderboard

    board = Leaderboard(lb)
    bench = "sunnybrook-sample__test__ankenbrand2021"
    assert set(board.entry_names(bench)) == {"unet-onnx", "unet-safetensors"}
    assert board.entry(bench, "unet-onnx").summary()["submission"]["model"]["provider"] == "CPUExecutionProvider"


def test_evaluate_model_onnx_path_imports_no_torch(tmp_path):
    """The ONNX path must not need torch: run it with torch blocked."""
    import subprocess
    import sys

    _graph(tmp_path / "m.onnx")
    _card(tmp_path, CARD)
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'segmentation_models_pytorch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from cardbench.evaluate import load_model_card
from cardbench.evaluate.runners import open_runner
from cardbench.evaluate.preprocess import prepare_slices
import numpy as np
card = load_model_card({str(tmp_path / 'model.yaml')!r})
r = open_runner({str(tmp_path / 'm.onnx')!r}, card)
lab = r.predict(np.arange(64 * 48 * 2, dtype=np.float32).reshape(64, 48, 2), 1e18)
print(lab.shape)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(64, 48, 2)"


def test_shapes_card_roundtrip():
    card = parse_model_card(copy.deepcopy(CARD))
    assert parse_model_card(card.to_dict()) == card


def test_prepare_and_back_by_hand_crop_pad_orders():
    from cardbench.evaluate.preprocess import largest_component, prepare_slices, scores_to_labels

    vol = np.arange(12 * 8, dtype=np.float32).reshape(12, 8, 1)  # x 0..11, y 0..7; value = 8 x + y
    d = copy.deepcopy(CARD)
    d["input"].update(size=[8, 8], fit="crop", intensity={"method": "none"})
    card = parse_model_card(d)
    x, g = prepare_slices(vol, card)
    assert x.shape == (1, 1, 8, 8)
    assert np.array_equal(x[0, 0], vol[2:10, :, 0])  # rows (x) 2..9 kept: centre crop of 12 -> 8
    # scores: LV where the network input is even, else MY; cropped-away rows x = 0, 1, 10, 11 are background
    s = np.stack([np.zeros((8, 8)), (x[0, 0] % 2 == 0) * 2.0 - 1, (x[0, 0] % 2 == 1) * 2.0 - 1])[None]
    lut = np.array([0, 1, 2], np.uint8)
    lab = scores_to_labels(s.astype(np.float32), g, card, lut)
    want = np.where(vol % 2 == 0, 1, 2).astype(np.uint8)
    want[[0, 1, 10, 11]] = 0
    assert np.array_equal(lab, want)
    # NHWC and yx: the network sees the transposed slice, channels last
    d["input"].update(axis_order="NHWC", spatial_order="yx", size=[8, 12], fit="pad", channels=2)
    card = parse_model_card(d)
    x, g = prepare_slices(vol, card)
    assert x.shape == (1, 8, 12, 2) and np.array_equal(x[0, :, :, 1], vol[:, :, 0].T)
    s = np.zeros((1, 8, 12, 3), np.float32)
    s[0, :, :, 1] = 1.0  # LV everywhere
    assert (scores_to_labels(s, g, card, lut) == 1).all()
    # largest 3D component per class: two LV blobs of 3 and 1 voxels -> the small one becomes background
    a = np.zeros((5, 5, 1), np.uint8)
    a[0:3, 0, 0] = 1
    a[4, 4, 0] = 1
    a[2, 2, 0] = 2
    out = largest_component(a, [1, 2])
    assert out[4, 4, 0] == 0 and out[0:3, 0, 0].tolist() == [1, 1, 1] and out[2, 2, 0] == 2
