"""Losses and per-epoch metrics that respect partial annotation (torch).

Partial annotation. A training image carries ``annotated`` (B, C): which output channels are
annotated in its frame (background always). A pixel labelled with an annotated class is certain.
A pixel labelled background in an image where some class is *not* annotated may belong to that
class (Sunnybrook at ES: the myocardium is drawn nowhere, so "background" there means "background or
MY"). Such a pixel's allowed set is {background} plus the unannotated classes, and the losses use
the probability of that set: the marginal (target-adaptive) loss of Fang & Yan, "Multi-organ
segmentation over partially labeled datasets with multi-scale feature abstraction", IEEE TMI
2020;39:3619, and Shi et al., "Marginal loss and exclusion loss for partially supervised multi-organ
segmentation", Med Image Anal 2021;70:101979. With every class annotated they reduce exactly to the
usual losses (tests compare them with ``torch.nn.functional.cross_entropy`` and
``segmentation_models_pytorch.losses``). The alternative (train MY only on ED frames, or ignore the
pixels) throws away the certain LV and background information of ES frames.

Losses (all take logits ``(B, C, H, W)``, targets ``(B, H, W)`` int64 channel indices,
annotated ``(B, C)`` bool):

* ``ce``: mean over pixels of ``-log P(allowed set)``.
* ``focal``: ``(1 - p)^gamma * -log p`` with ``p = P(allowed set)`` (Lin et al., ICCV 2017; the
  seed's FocalLoss with gamma 2 on fastai's flattened cross-entropy, mean over pixels).
* ``dice``: soft Dice per channel over the batch, as ``segmentation_models_pytorch.losses.DiceLoss``
  (mode multiclass, from logits, smooth 0, eps 1e-7: channels without target pixels in the batch
  contribute 0, the mean is over all channels); a channel's sums use only images where it is
  annotated (background: only fully annotated images). Note: the seed's "softdice" was the
  generalized Dice loss (Sudre et al. 2017); this is smp's plain soft Dice.

Metrics (the seed's log columns, ``code/7T/segmentation_with_reduced_set.py``): per image on the
network canvas, then averaged over images: ``acc_seg`` (pixel accuracy: share of pixels whose
predicted class is allowed, i.e. equal to the label, or for background pixels of a partially
annotated image one of background and the unannotated classes), ``diceComb`` (Dice of foreground
vs background), ``diceLV``, ``diceMY`` (Dice of one channel); Dice = 2|A and B| / (|A| + |B|), an image where both are empty counts 1 (the seed's
``res[isnan] = 1``); images where the class is not annotated are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def allowed_mask(target: torch.Tensor, annotated: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(B, C, H, W)`` bool: the classes each pixel may belong to (see the module docstring)."""
    onehot = F.one_hot(target.long(), n_classes).permute(0, 3, 1, 2).bool()
    unann = (~annotated.bool())[:, :, None, None]
    bg = (target == 0)[:, None]
    return onehot | (bg & unann)


def marginal_nll(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``-log P(allowed set)``, ``(B, H, W)`` float32."""
    logp = F.log_softmax(logits.float(), dim=1)
    allowed = allowed_mask(target, annotated, logits.shape[1])
    return -torch.logsumexp(logp.masked_fill(~allowed, float("-inf")), dim=1)


def ce_loss(logits, target, annotated) -> torch.Tensor:
    """Cross-entropy with partial annotation (mean over pixels)."""
    return marginal_nll(logits, target, annotated).mean()


def focal_loss(logits, target, annotated, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss with partial annotation (mean over pixels)."""
    nll = marginal_nll(logits, target, annotated)
    p = torch.exp(-nll)
    return ((1 - p) ** gamma * nll).mean()


def dice_loss(logits, target, annotated, eps: float = 1e-7) -> torch.Tensor:
    """Soft Dice loss with partial annotation (smp ``DiceLoss`` semantics when fully annotated)."""
    n, c = logits.shape[:2]
    prob = F.softmax(logits.float(), dim=1).reshape(n, c, -1)
    onehot = F.one_hot(target.long().reshape(n, -1), c).permute(0, 2, 1).float()
    ann = annotated.bool().clone()
    ann[:, 0] = annotated.bool().all(dim=1)  # background is certain only where everything is annotated
    w = ann.float()[:, :, None]
    inter = (prob * onehot * w).sum(dim=(0, 2))
    card = ((prob + onehot) * w).sum(dim=(0, 2))
    score = (2 * inter) / card.clamp_min(eps)
    loss = 1.0 - score
    present = (onehot * w).sum(dim=(0, 2)) > 0
    return (loss * present.float()).mean()


def compute_loss(kind: str, logits, target, annotated, gamma: float = 2.0) -> torch.Tensor:
    """Dispatch on ``kind``: ``ce``, ``focal`` or ``dice``.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "ce":
        return ce_loss(logits, target, annotated)
    if kind == "focal":
        return focal_loss(logits, target, annotated, gamma)
    if kind == "dice":
        return dice_loss(logits, target, annotated)
    raise ValueError(f"unknown loss '{kind}' (use ce, focal or dice)")


def _dice_per_image(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of two bool ``(B, N)`` masks; both empty -> 1."""
    inter = (pred & ref).sum(1).double()
    tot = pred.sum(1).double() + ref.sum(1).double()
    return torch.where(tot > 0, 2 * inter / tot.clamp_min(1), torch.ones_like(tot))


def image_metrics(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor,
                  classes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per-image metrics (float64 ``(B,)`` each, NaN where not defined).

    Keys: ``acc_seg``, ``diceComb`` and ``dice<CLASS>`` for each class (``diceLV``, ``diceMY``).
    """
    n, c = logits.shape[:2]
    am = logits.argmax(1)
    allowed = allowed_mask(target, annotated, c)
    correct = allowed.gather(1, am[:, None])[:, 0].reshape(n, -1).double().mean(1)
    pred = am.reshape(n, -1)
    tgt = target.long().reshape(n, -1)
    ann = annotated.bool()
    full = ann.all(1)
    out = {"acc_seg": correct}
    comb = _dice_per_image(pred > 0, tgt > 0)
    out["diceComb"] = torch.where(full, comb, torch.full_like(comb, float("nan")))
    for i, cls in enumerate(classes, start=1):
        d = _dice_per_image(pred == i, tgt == i)
        out[f"dice{cls}"] = torch.where(ann[:, i], d, torch.full_like(d, float("nan")))
    return out
