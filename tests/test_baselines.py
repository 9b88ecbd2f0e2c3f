"""Baselines with torch + segmentation-models-pytorch (the [baselines] extra).

Real data first: the embedded Sunnybrook sample prepared into the standard layout (3 training
patients, 2 test patients; MY annotated at ED only). Synthetic arrays only for hand-worked edge cases.
Expected values come from other libraries (torch, smp, torchvision) or are worked out by hand here.
"""

from __future__ import annotations

import math
import pickle

import nibabel as nib
import numpy as np
import pytest

from cardbench.baselines.config import AugmentConfig, load_config
from helpers import LazyModule, has_modules

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(not has_modules("torch", "segmentation_models_pytorch"),
                                 reason="needs torch and segmentation-models-pytorch (the [baselines] extra)")]
# imported when a test first uses them, not when the file is collected (tests/helpers.py)
torch = LazyModule("torch")
smp = LazyModule("segmentation_models_pytorch")
F = LazyModule("torch.nn.functional")
losses = LazyModule("cardbench.baselines.losses")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sunnybrook(sunnybrook_prepared):
    return sunnybrook_prepared  # prepared once per test run (conftest)


# ------------------------------------------------------------------------------ losses, metrics
def _rand_batch(seed=0, n=2, c=3, h=8, w=8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g)
    target = torch.randint(0, c, (n, h, w), generator=g)
    return logits, target, torch.ones(n, c, dtype=torch.bool)


def test_fully_annotated_ce_equals_torch_cross_entropy():
    logits, target, ann = _rand_batch()
    assert torch.allclose(losses.ce_loss(logits, target, ann), F.cross_entropy(logits, target), atol=1e-6)


def test_fully_annotated_dice_equals_smp_dice_loss():
    from segmentation_models_pytorch.losses import DiceLoss

    logits, target, ann = _rand_batch(1)
    target[:, :, :] = torch.where(target == 2, torch.zeros_like(target), target)  # one channel absent: masked
    ref = DiceLoss(mode="multiclass", from_logits=True)(logits, target)
    assert torch.allclose(losses.dice_loss(logits, target, ann), ref, atol=1e-6)


def test_fully_annotated_focal_equals_the_seeds_formula():
    # seed: CE = CrossEntropyFlat(reduction='none'); pt = exp(-CE); mean((1 - pt)^2 * CE)
    logits, target, ann = _rand_batch(2)
    ce = F.cross_entropy(logits, target, reduction="none")
    ref = ((1 - torch.exp(-ce)) ** 2 * ce).mean()
    assert torch.allclose(losses.focal_loss(logits, target, ann, 2.0), ref, atol=1e-6)


def test_partial_annotation_by_hand():
    """MY not annotated: a background pixel may be MY. Equal logits -> p = 1/3 per class.
    bg pixel: -log(p_bg + p_MY) = -log(2/3) = 0.405465; LV pixel: -log(1/3) = 1.098612; mean 0.752039."""
    logits = torch.zeros(1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    ann = torch.tensor([[True, True, False]])
    assert float(losses.ce_loss(logits, target, ann)) == pytest.approx((math.log(1.5) + math.log(3)) / 2, abs=1e-6)
    # fully annotated the bg pixel costs -log(1/3): the mean is log 3
    assert float(losses.ce_loss(logits, target, torch.ones(1, 3, dtype=torch.bool))) == pytest.approx(math.log(3))


def test_partial_annotation_does_not_push_my_to_background():
    """Gradient of the bg logit vs the MY logit at a bg pixel of an ES image: with MY unannotated both get
    the same push (they share the allowed set); fully annotated MY is pushed down."""
    logits = torch.zeros(1, 3, 1, 1, requires_grad=True)
    losses.ce_loss(logits, torch.tensor([[[0]]]), torch.tensor([[True, True, False]])).backward()
    g = logits.grad[0, :, 0, 0]
    assert g[0] == pytest.approx(g[2]) and g[1] > 0  # LV pushed down, bg and MY alike
    logits.grad = None
    losses.ce_loss(logits, torch.tensor([[[0]]]), torch.ones(1, 3, dtype=torch.bool)).backward()
    assert logits.grad[0, 2, 0, 0] > 0


def test_image_metrics_by_hand():
    # image 0 (all annotated): ref LV 2 px, pred LV 1 of them -> Dice 2*1/(1+2) = 2/3; MY empty in both -> 1
    # image 1 (MY not annotated): MY Dice NaN, diceComb NaN
    target = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])
    pred = torch.tensor([[[1, 0, 0, 0]], [[1, 0, 2, 0]]])
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    ann = torch.tensor([[True, True, True], [True, True, False]])
    m = losses.image_metrics(logits, target, ann, ("LV", "MY"))
    assert m["diceLV"].tolist() == pytest.approx([2 / 3, 1.0])
    assert m["diceMY"][0] == 1.0 and math.isnan(m["diceMY"][1])
    assert m["diceComb"][0] == pytest.approx(2 / 3) and math.isnan(m["diceComb"][1])
    # accuracy: image 0: 3 of 4 right; image 1: the MY prediction on a bg pixel is allowed -> 4 of 4
    assert m["acc_seg"].tolist() == pytest.approx([0.75, 1.0])


# ------------------------------------------------------------------------------ augmentation, geometry
def test_dihedral_augmentation_is_one_of_the_8_symmetries_for_image_and_label():
    from cardbench.baselines.augment import augment_batch

    cfg = AugmentConfig(flip=True, flip_vert=True, max_rotate=0, max_zoom=1.0, max_lighting=0.0, p_affine=0,
                        p_lighting=0)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, 16, 16)
    y = torch.randint(0, 3, (6, 16, 16))
    xa, ya = augment_batch(x, y, cfg, g)

    def syms(a):
        out = []
        for t in (a, a.transpose(-1, -2)):
            out += [t, t.flip(-1), t.flip(-2), t.flip(-1).flip(-2)]
        return out

    for i in range(6):
        hits = [k for k, s in enumerate(syms(x[i, 0])) if torch.allclose(xa[i, 0], s, atol=1e-5)]
        assert hits, f"image {i} is not a dihedral transform"
        assert torch.equal(ya[i], syms(y[i])[hits[0]])


def test_fit_geometry_by_hand():
    from cardbench.baselines.data import fit_geometry

    g = fit_geometry(80, 70, 64)  # scale 64/80 = 0.8 -> 64 x 56, padded 4 px left and right
    assert (g.nh, g.nw, g.top, g.left) == (64, 56, 0, 4)


def test_predict_volume_inverts_the_padding_exactly():
    """A stand-in model that returns the one-hot of a known canvas: (64, 48) slices at size 64 are only
    padded (8 px left/right), so the prediction must equal the labels exactly."""
    from cardbench.baselines.data import preprocess_slice
    from cardbench.baselines.predict import predict_volume

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (64, 48, 3)).astype(np.int64)
    canvases = torch.stack([preprocess_slice(np.zeros((64, 48)), (0, 1), 64, lab[:, :, k])[1] for k in range(3)])

    class Oracle(torch.nn.Module):
        def forward(self, x):
            return F.one_hot(canvases[: x.shape[0]], 3).permute(0, 3, 1, 2).float()

    cfg = load_config("cpu-smoke", {"image_size": 64})
    out = predict_volume(Oracle(), cfg, np.zeros((64, 48, 3), np.float32), torch.device("cpu"), batch_size=8)
    assert out.dtype == np.uint8
    assert np.array_equal(out, lab)  # channels 1, 2 are cardbench LV 1, MY 2


# ------------------------------------------------------------------------------ weights
def test_smp_hub_table_matches_installed_smp():
    from segmentation_models_pytorch.encoders import encoders

    from cardbench.baselines.weights import SMP_HUB

    for name, (repo, rev) in SMP_HUB.items():
        s = encoders[name]["pretrained_settings"]["imagenet"]
        assert (s["repo_id"], s["revision"]) == (repo, rev)


def test_imagenet_init_offline_raises_and_local_torchvision_file_loads(tmp_path, monkeypatch):
    import torchvision

    from cardbench.baselines.model import build_model
    from cardbench.baselines.weights import WeightsUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config("cpu-smoke", {"init": "imagenet"})
    with pytest.raises(WeightsUnavailable, match="--encoder-weights"):
        build_model(cfg)
    tv = torchvision.models.resnet18(weights=None)  # a local "ImageNet" copy: torchvision's own format
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tv.state_dict(), path)
    model = build_model(load_config("cpu-smoke", {"init": "imagenet", "encoder_weights": str(path)}))
    for k in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(model.encoder.state_dict()[k], tv.state_dict()[k])


def test_fastai_dynamicunet_encoder_keys_map_to_smp(tmp_path):
    """fastai v1 create_body(resnet, cut=-2) = Sequential(conv1, bn1, relu, maxpool, layer1..4) at `layers.0`."""
    import torchvision
    from typer.testing import CliRunner

    from cardbench.cli import app

    tv = torchvision.models.resnet18(weights=None)
    body = torch.nn.Sequential(*list(tv.children())[:-2])
    fake_unet = torch.nn.Module()
    fake_unet.layers = torch.nn.ModuleList([body, torch.nn.BatchNorm2d(512), torch.nn.Conv2d(512, 3, 1)])
    path = tmp_path / "fastai_state.pth"
    torch.save(fake_unet.state_dict(), path)
    out = tmp_path / "enc.safetensors"
    r = CliRunner().invoke(app, ["baseline", "import-fastai", str(path), "--out", str(out), "--encoder", "resnet18"])
    assert r.exit_code == 0, r.output
    from cardbench.baselines.model import build_model

    model = build_model(load_config("cpu-smoke", {"init": "imagenet", "encoder_weights": str(out)}))
    assert torch.equal(model.encoder.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert torch.equal(model.encoder.bn1.running_mean, tv.bn1.running_mean)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    from cardbench.baselines.weights import WeightsError, read_state_dict

    path = tmp_path / "model.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(WeightsError, match="weights_only"):
        read_state_dict(path)
    assert "must never run" not in capsys.readouterr().out


# ------------------------------------------------------------------------------ data on real images
def test_index_sunnybrook_respects_annotations(sunnybrook):
    from cardbench.baselines.data import DatasetError, index_dataset
    from cardbench.baselines.subsets import get_subset

    idx = index_dataset(sunnybrook, ["train"])
    # 3 training patients x (ED, ES); MY annotated at ED only (data README)
    assert len(idx.volumes) == 6
    ann = {(v.subject, v.phase): v.annotated for v in idx.volumes}
    assert ann[("SCD0000101", "ED")] == frozenset({"LV", "MY"})
    assert ann[("SCD0000101", "ES")] == frozenset({"LV"})
    with pytest.raises(DatasetError, match="306"):
        index_dataset(sunnybrook, ["train"], subset=get_subset("v1"))
    assert {v.phase for v in index_dataset(sunnybrook, ["train"], subset=get_subset("edes")).volumes} == {"ED", "ES"}


def _subset_file(sunnybrook, path, n_per_volume=3):
    rows = ["subject,frame,slice"]
    for s in ("SCD0000101", "SCD0000201"):
        for f in sorted((sunnybrook / "labels" / s).glob("*.nii.gz")):
            frame = int(f.name.split("_frame")[1][:2])
            rows += [f"{s},{frame},{k}" for k in range(2, 2 + n_per_volume)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_training_is_deterministic_and_resume_continues_exactly(sunnybrook, tmp_path):
    from cardbench.baselines.model import read_checkpoint
    from cardbench.baselines.train import train

    sub = _subset_file(sunnybrook, tmp_path / "subset.csv")  # 12 real images
    base = {"dataset": str(sunnybrook), "subset_file": str(sub), "image_size": 64, "batch_size": 4,
            "base_epochs": 2, "threads": 1, "valid_split": "test"}
    cfg = lambda out: load_config("cpu-smoke", {**base, "out": str(tmp_path / out)})  # noqa: E731
    a = train(cfg("a"), progress=False)
    b = train(cfg("b"), progress=False)
    wa, _ = read_checkpoint(a.checkpoint)
    wb, _ = read_checkpoint(b.checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.log["train_loss"].tolist() == b.log["train_loss"].tolist()
    assert list(a.log.columns[:8]) == ["epoch", "train_loss", "valid_loss", "acc_seg", "diceComb", "diceLV",
                                       "diceMY", "time"]
    assert a.log["valid_loss"].notna().all()  # validated on the 2 test patients
    # interrupted after the first epoch (inside the first stage), then resumed: identical to the uninterrupted run
    train(cfg("c"), progress=False, stop_after=1)
    c = train(cfg("c"), resume=True, progress=False)
    import pandas as pd

    cols = ["epoch", "train_loss", "valid_loss", "acc_seg", "diceComb", "diceLV", "diceMY", "stage", "lr"]
    la, lc = pd.read_csv(a.out / "train_log.csv"), pd.read_csv(c.out / "train_log.csv")
    assert len(la) == 4
    pd.testing.assert_frame_equal(la[cols], lc[cols])
    wc, meta = read_checkpoint(c.checkpoint)
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert meta["config"]["seed"] == 0


def test_training_writes_a_line_per_epoch_when_not_a_terminal(sunnybrook, tmp_path):
    import io

    from rich.console import Console

    from cardbench.baselines.train import train

    sub = _subset_file(sunnybrook, tmp_path / "subset.csv")
    cfg = load_config("cpu-smoke", {"dataset": str(sunnybrook), "subset_file": str(sub), "image_size": 64,
                                    "batch_size": 4, "base_epochs": 2, "threads": 1, "valid_split": "test",
                                    "out": str(tmp_path / "run")})
    log = io.StringIO()
    res = train(cfg, progress=True, console=Console(file=log), stop_after=2)
    lines = [ln for ln in log.getvalue().splitlines() if ": epoch: " in ln]
    assert len(lines) == 2 == len(res.log)  # one line per epoch, of the 4 scheduled
    for ln, (_, row), pct in zip(lines, res.log.iterrows(), ("25 %", "50 %")):
        assert f"{pct} ({row['epoch'] + 1}/4)" in ln and "elapsed" in ln and "left" in ln
        assert f"loss {row['train_loss']:.4f}" in ln and f"Dice LV {row['diceLV']:.3f}" in ln


def test_demo_loop_short_on_real_images(sunnybrook, tmp_path):
    """The demo loop, shorter (64 px): predictions are scored unchanged, land on the leaderboard next to the
    published entries, and the model's LV Dice on its own training images beats 0.5."""
    from cardbench.baselines.demo import run_demo_loop
    from cardbench.baselines.predict import predict_dataset
    from cardbench.benchmark import score
    from cardbench.benchmark.leaderboard import Leaderboard

    # the demo's two stages, shorter and at 5x and 20x the learning rates: 2 x 5 epochs at 64 px, decoder
    # depth 3 (LV Dice on the training images 0.77, 0.76 and 0.74 with seeds 42, 1 and 7; 2 x 8 epochs at
    # 3x the rates gave 0.78 in 1.6 times the time; 2 x 12 epochs at the demo's rates and depth 5 gave
    # 0.58 to 0.61, at 2.5 times the time)
    stages = [{"name": "stage1", "frozen": False, "lr": 5e-3, "epochs": None},
              {"name": "stage2", "frozen": False, "lr": 2e-3, "epochs": None}]
    ov = {"image_size": 64, "base_epochs": 5, "threads": 1, "decoder_channels": [32, 16, 8], "stages": stages}
    res = run_demo_loop(tmp_path / "demo", progress=False, overrides=ov)
    # predictions: same names and grid as the reference labels, uint8 cardbench values
    for p in sorted(res.predictions.rglob("*.nii.gz")):
        ref = nib.load(str(res.dataset / "labels" / p.parent.name / p.name))
        img = nib.load(str(p))
        assert np.allclose(img.affine, ref.affine) and img.shape == ref.shape
        assert img.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(img.dataobj))) <= {0, 1, 2}
    assert len(list(res.predictions.rglob("*.nii.gz"))) == 4  # 2 test patients x ED, ES
    assert (res.predictions / "submission.yaml").exists()
    s = res.results["cardbench-v1"].summary
    assert s["dataset"]["name"] == "sunnybrook-sample"
    lb = Leaderboard(res.leaderboard)
    bench, name = res.entries["ankenbrand2021"]
    assert name in lb.entry_names(bench)
    assert "cmr-7t__test__ankenbrand2021" in lb.benchmark_ids()
    # the model on its own training images: per-image LV Dice (the paper's protocol) above 0.5
    train_pred = predict_dataset(res.run / "model.safetensors", res.dataset, tmp_path / "train_pred", split="train",
                                 progress=False)
    r = score(train_pred.out, res.dataset, protocol="ankenbrand2021", split="train", progress=False)
    assert r.headline()["LV"] > 0.5


def test_predict_writes_label_team_and_method(tmp_path):
    from cardbench.baselines.predict import submission_meta

    cfg = load_config("cpu-smoke", {"image_size": 64})
    ck = tmp_path / "model.safetensors"
    ck.write_bytes(b"weights")
    meta = submission_meta(cfg, {"epochs_done": 3}, ck, "sunnybrook-sample", "test", None)
    assert meta["label"] and cfg.encoder in meta["label"] and meta["team"] and cfg.encoder in meta["method"]
    from cardbench.benchmark.submission import _ALLOWED_META_KEYS

    assert set(meta) <= _ALLOWED_META_KEYS  # `cardbench score` accepts what predict writes


def test_png_predictions_in_the_seeds_naming(sunnybrook, tmp_path):
    from cardbench.baselines.model import save_checkpoint, build_model
    from cardbench.baselines.predict import predict_dataset
    from PIL import Image

    cfg = load_config("cpu-smoke", {"image_size": 64})
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "model.safetensors", build_model(cfg), cfg)
    res = predict_dataset(ck, sunnybrook, tmp_path / "png", split="test", fmt="png", progress=False)
    vol = nib.load(str(sunnybrook / "images" / "SCD0000401" / "SCD0000401_frame20.nii.gz"))
    n = vol.shape[2]
    names = sorted(p.name for p in res.out.glob("SCD0000401_slice*_frame020-mask.png"))
    assert names == [f"SCD0000401_slice{k:03d}_frame020-mask.png" for k in range(n)]
    arr = np.array(Image.open(res.out / names[0]))
    assert arr.shape == (vol.shape[1], vol.shape[0]) and arr.dtype == np.uint8  # row = y, column = x
