"""Baselines without torch: configs, the seed's schedule, published subsets, CLI messages.

Expected values are worked out by hand from the paper / the seed's code:
E = round(10 * n_all / n_subset) with n_all = 5076 training images of the 7T study and the
subset sizes 2626 (v7, r7), 1001 (v3, r3), 306 (v1, r1), 448 (esed, r_esed):

    10 * 5076 / 2626 = 19.33 -> 19      10 * 5076 / 1001 = 50.71 -> 51
    10 * 5076 / 306 = 165.88 -> 166     10 * 5076 / 448  = 113.30 -> 113
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from cardbench.baselines.config import ConfigError, compute_schedule, load_config, parse_override, shipped_configs
from cardbench.baselines.subsets import SubsetError, get_subset
from cardbench.cli import app

N_ALL = 5076
SIZES = {"v7": 2626, "r7": 2626, "v3": 1001, "r3": 1001, "v1": 306, "r1": 306, "esed": 448, "r_esed": 448}
E_BY_HAND = {"v7": 19, "r7": 19, "v3": 51, "r3": 51, "v1": 166, "r1": 166, "esed": 113, "r_esed": 113}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_published_subset_sizes(name):
    s = get_subset(name)
    assert len(s.keys) == SIZES[name]
    assert s.n_all == N_ALL


def test_v_subsets_are_whole_volunteers_r_subsets_span_all():
    # v7/v3/v1: all images of 7/3/1 volunteers; r*: random images of all 14 (paper, Methods)
    assert len({k[0] for k in get_subset("v7").keys}) == 7
    assert len({k[0] for k in get_subset("v3").keys}) == 3
    assert len({k[0] for k in get_subset("v1").keys}) == 1
    assert len({k[0] for k in get_subset("r1").keys}) == 14
    assert get_subset("v3").keys <= get_subset("v7").keys


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize("init", ["imagenet", "checkpoint:base.safetensors", "random"])
def test_finetune_schedule_matches_the_seed(name, init):
    cfg = load_config("finetune", {"init": init, "subset": name})
    stages = compute_schedule(cfg, SIZES[name], N_ALL)
    e = E_BY_HAND[name]
    assert [s.epochs for s in stages] == [e, e]
    assert [s.lr for s in stages] == [1e-4, 1e-5]
    if init == "random":  # plain learning: nothing frozen, 2E epochs
        assert [s.frozen for s in stages] == [False, False]
    else:  # TL and TL2: encoder frozen for E epochs, then everything for E epochs
        assert [s.frozen for s in stages] == [True, False]


def test_full_training_set_runs_ten_plus_ten_epochs():
    cfg = load_config("finetune")
    assert [(s.epochs, s.frozen) for s in compute_schedule(cfg, N_ALL, N_ALL)] == [(10, True), (10, False)]


def test_pretrain_kaggle_schedule_is_the_seeds():
    # code/kaggle/train_fastai_segmentation.py: fit_one_cycle 5, 10, 15 at 1e-4 frozen, then unfrozen at 1e-5
    cfg = load_config("pretrain-kaggle")
    stages = compute_schedule(cfg, 12345)
    assert [(s.epochs, s.lr, s.frozen) for s in stages] == [
        (5, 1e-4, True), (10, 1e-4, True), (15, 1e-4, True), (5, 1e-5, False), (10, 1e-5, False), (15, 1e-5, False)]
    assert cfg.batch_size == 32 and cfg.encoder == "resnet34" and cfg.image_size == 256 and cfg.init == "imagenet"


def test_schedule_reproduces_the_published_training_logs(shared_data):
    """The seed's per-epoch logs (train_log_combined.csv) have 2E rows per run: check our E against them."""
    log = pd.read_csv(shared_data / "cmr-seg-tl/analysis/7T/train_log_combined.csv")
    rows = log.groupby("model").size()
    checked = 0
    for model, n in rows.items():
        init_name, _, sub = model.partition("_")
        init = {"plainLearn": "random", "imagenetTransferLearn": "imagenet",
                "doubleTransferLearn": "checkpoint:base.safetensors"}[init_name]
        cfg = load_config("finetune", {"init": init})
        n_sub = SIZES[sub] if sub else N_ALL
        assert sum(s.epochs for s in compute_schedule(cfg, n_sub, N_ALL)) == n, model
        checked += 1
    assert checked == 27


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown key"):
        load_config("finetune", {"learning_rate": 1})
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config("finetune", {"image_size": 100})
    with pytest.raises(ConfigError, match="init"):
        load_config("finetune", {"init": "kaggle"})
    with pytest.raises(ConfigError, match="no such config"):
        load_config("no-such-config")
    assert parse_override("augment.max_rotate=20") == ("augment.max_rotate", 20)
    assert load_config("finetune", {"augment.max_rotate": 20}).augment.max_rotate == 20
    with pytest.raises(SubsetError, match="unknown subset"):
        get_subset("v9")


def test_shipped_configs_listed():
    assert {"finetune", "pretrain-kaggle", "cpu-smoke", "demo"} <= set(shipped_configs())


def test_cli_schedule_json():
    r = CliRunner().invoke(app, ["baseline", "schedule", "--subset", "v1", "--init", "random", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["n_images"] == 306 and d["n_all"] == 5076
    assert [(s["epochs"], s["frozen"]) for s in d["stages"]] == [(166, False), (166, False)]


def test_imagenet_offline_fails_before_torch_is_imported(tmp_path):
    """--init imagenet without a local copy: one clear message naming the file and the flag, exit 2, and no
    torch import (so it fails at once)."""
    code = (
        "import os, sys; os.environ['HF_HUB_OFFLINE'] = '1'\n"
        "from typer.testing import CliRunner\nfrom cardbench.cli import app\n"
        f"r = CliRunner().invoke(app, ['baseline', 'train', '--init', 'imagenet', '--dataset', {str(tmp_path)!r}])\n"
        "print(r.exit_code); print('torch' in sys.modules); print(r.output)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = res.stdout.splitlines()
    assert lines[0] == "2", res.stdout + res.stderr
    assert lines[1] == "False"
    msg = " ".join(lines[2:])
    for needle in ("model.safetensors", "smp-hub/resnet34.imagenet", "resnet34-b627a593.pth", "--encoder-weights"):
        assert needle in msg, msg


def test_missing_torch_gives_install_message(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from typer.testing import CliRunner\nfrom cardbench.cli import app\n"
        f"r = CliRunner().invoke(app, ['baseline', 'predict', 'm.safetensors', '--dataset', {str(tmp_path)!r}, "
        f"'--out', {str(tmp_path / 'p')!r}])\n"
        "print(r.exit_code); print(r.output)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = res.stdout.splitlines()
    assert lines[0] == "1", res.stdout + res.stderr
    msg = " ".join(lines[1:])
    assert "pip install torch==2.14.1 torchvision==0.29.1 segmentation-models-pytorch" in msg
    assert "cardbench[baselines]" in msg


def test_subset_files_in_three_forms(tmp_path):
    # the form `cardbench data splits cmr-7t --subset v3 --out v3.csv` writes: case, subject, split
    p = tmp_path / "v3.csv"
    p.write_text("case,subject,split\n17_slice000_frame000,17,train\n17_slice003_frame024,17,train\n")
    assert get_subset(subset_file=p).keys == frozenset({("17", 0, 0), ("17", 24, 3)})
    p = tmp_path / "images.tsv"
    p.write_text("subject\tframe\tslice\nA\t1\t2\n")
    assert get_subset(subset_file=p).keys == frozenset({("A", 1, 2)})
    p = tmp_path / "subjects.csv"
    p.write_text("subject\n0001\n0002\n")
    s = get_subset(subset_file=p)
    assert s.keys is None and s.subjects == frozenset({"0001", "0002"})
    p = tmp_path / "bad.csv"
    p.write_text("patient,x\n1,2\n")
    with pytest.raises(SubsetError, match="needs columns"):
        get_subset(subset_file=p)


def test_kaggle_confidence_sets_from_the_published_table(shared_data):
    import csv

    from cardbench.baselines.subsets import confidence_subjects

    path = shared_data / "cmr-seg-tl/analysis/kaggle/confidence_by_patient.tsv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for cut in (0.05, 0.10, 0.15):
        expected = sorted(r["Id"] for r in rows if float(r["confidence"]) <= cut)
        assert confidence_subjects(cut, shared_data) == expected
    assert len(confidence_subjects(0.05, shared_data)) == 180
    assert load_config("pretrain-kaggle").subset == "kaggle-conf5"
