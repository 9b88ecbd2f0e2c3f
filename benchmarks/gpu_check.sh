#!/usr/bin/env bash
# GPU check for cardbench's baselines: trains briefly and predicts on CUDA, prints images per
# second and peak GPU memory. Runnable unchanged on any machine with an NVIDIA GPU and the
# project installed with the baselines extra (pip install -e '.[baselines]').
#
#   bash benchmarks/gpu_check.sh                 # 1 GPU; bf16 autocast + channels_last on
#   NPROC=2 bash benchmarks/gpu_check.sh         # also a 2-process DDP run (nccl), 2 GPUs
#   STEPS=40 SIZE=256 BATCH=16 bash benchmarks/gpu_check.sh
#
# Data: the Sunnybrook sample embedded in cardbench (CC0), prepared into a temporary folder.
# Exit code: 0 when every step ran; 1 when CUDA is missing or a step failed.
set -euo pipefail
SIZE=${SIZE:-256}; BATCH=${BATCH:-16}; STEPS=${STEPS:-30}; NPROC=${NPROC:-1}; ENCODER=${ENCODER:-resnet34}
PY=${PYTHON:-python}
WORK=$(mktemp -d -t cardbench-gpu-XXXX)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} HF_HUB_OFFLINE=1

cat > "$WORK/gpu_check.py" <<'PYEOF'
import json, os, sys, time
from pathlib import Path

import torch

def main():
    work, size, batch, steps, encoder = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    kind = os.environ.get("DEVICE", "cuda")  # DEVICE=cpu: a dry run of the same steps without a GPU
    if kind == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine (DEVICE=cpu runs the same steps on the CPU)",
              file=sys.stderr)
        return 1
    cuda = kind == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    peak = (lambda: f"{torch.cuda.max_memory_allocated() / 2**20:8.0f} MiB") if cuda else (lambda: "n/a (CPU)")
    reset = torch.cuda.reset_peak_memory_stats if cuda else (lambda: None)
    from cardbench.baselines.config import load_config
    from cardbench.baselines.model import build_model
    from cardbench.baselines.predict import predict_dataset
    from cardbench.baselines.train import train
    from cardbench.datasets.prepare import prepare_dataset

    ds = work / "sunnybrook-sample"
    if not ds.exists():
        prepare_dataset("sunnybrook-sample", ds)
    dev = torch.device(kind)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device: {name}, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported() if cuda else 'cpu autocast'}")
    # 1) raw training step speed: U-Net, bf16 autocast, channels_last, synthetic batch of the real size
    cfg = load_config("finetune", {"init": "random", "encoder": encoder, "image_size": size, "batch_size": batch,
                                   "device": kind, "amp": "true"})
    model = build_model(cfg).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(cfg.classes) + 1, (batch, size, size), device=dev)
    reset()
    for i in range(steps + 5):
        if i == 5:
            sync(); t0 = time.perf_counter()
        with torch.autocast(kind, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    sync()
    tr = steps * batch / (time.perf_counter() - t0)
    print(f"train step  {encoder} {size}px batch {batch} bf16+channels_last: {tr:8.1f} images/s, "
          f"peak GPU memory {peak()}")
    model.eval()
    reset()
    with torch.no_grad():
        for i in range(steps + 5):
            if i == 5:
                sync(); t0 = time.perf_counter()
            with torch.autocast(kind, dtype=torch.bfloat16):
                model(x)
    sync()
    inf = steps * batch / (time.perf_counter() - t0)
    print(f"inference   {encoder} {size}px batch {batch} bf16+channels_last: {inf:8.1f} images/s, "
          f"peak GPU memory {peak()}")
    # 2) cardbench's own training loop and prediction on real images (one short epoch per stage)
    out = work / "run"
    cfg = load_config("cpu-smoke", {"dataset": str(ds), "device": kind, "amp": "true" if cuda else "false",
                                    "image_size": size, "batch_size": batch, "out": str(out)})
    reset()
    res = train(cfg, progress=False, channels_last=cuda)
    n_img = res.n_train * len(res.log)
    print(f"cardbench train (cpu-smoke config on {kind}, {res.n_train} images x {len(res.log)} epochs): "
          f"{n_img / res.seconds:8.1f} images/s incl. loading, peak GPU memory "
          f"{peak()}")
    t0 = time.perf_counter()
    predict_dataset(res.checkpoint, ds, work / "pred", split=None, device=kind, progress=False)
    n_pred = len(list((work / "pred").rglob("*.nii.gz")))
    print(f"cardbench predict: {n_pred} volumes in {time.perf_counter() - t0:.1f} s")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
PYEOF

"$PY" "$WORK/gpu_check.py" "$WORK" "$SIZE" "$BATCH" "$STEPS" "$ENCODER"
if [ "$NPROC" -gt 1 ]; then
  "$PY" -c "import cardbench.datasets.prepare as p; p.prepare_dataset('sunnybrook-sample', '$WORK/sb2')"
  t0=$(date +%s.%N)
  "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m cardbench.baselines.train \
    --config cpu-smoke --set "dataset=$WORK/sb2" --set "device=${DEVICE:-cuda}" --set "image_size=$SIZE" \
    --set "batch_size=$((BATCH * NPROC))" --set "out=$WORK/ddp" $([ "${DEVICE:-cuda}" = cuda ] && echo "--set amp=true --channels-last")
  t1=$(date +%s.%N)
  echo "DDP $NPROC processes: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s wall for the cpu-smoke schedule"
fi
