"""segmentation-models-pytorch U-Net baselines (pretrain, fine-tune, predict). Needs the
``[baselines]`` extra (torch, torchvision, segmentation-models-pytorch)."""
