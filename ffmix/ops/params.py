"""Drawing the random parameters of one mixed batch: who mixes with whom, by how much, and where.

Drawing is kept apart from mixing (as in timm) so that the pixel kernel and the label kernel receive the
same parameters and are pure functions of them, testable against NumPy. Both FFCV operations call
``draw_mix_params`` with the same key and get the same answer: that is how image and label cannot disagree.

Parameters of a batch of ``n`` samples (arrays of length ``n``):

- ``partner[i]``: the sample mixed into ``i``. Samples are paired through a random permutation (pairs
  ``perm[2k], perm[2k+1]``); with odd ``n`` the last one mixes with ``perm[0]``. Nobody is their own partner
  when ``n >= 2``.
- ``weight[i]``: the MixUp weight of sample ``i``'s own pixels in 1/256ths (256 = untouched). Quantising
  λ lets the kernel blend in exact integer arithmetic; the label uses the quantised value, so pixels and
  targets carry exactly the same weight.
- ``box[i] = (y0, y1, x0, x1)``: the CutMix rectangle pasted from the partner (empty when y0 == y1).
- ``lam[i]``: the weight of sample ``i``'s own class in its target: ``weight / 256`` for MixUp, the exact
  fraction of pixels outside the box for CutMix, 1 when unmixed.

λ drawn from Beta(α, α) is first clipped to ``[lam_low, lam_high]`` (``clip_lam``; (0, 1) leaves it as drawn),
then quantised (MixUp) or turned into a box (CutMix, whose true λ, the box's area, can differ slightly from the
clipped value when the box is clipped to the image).

Modes: ``batch`` draws one decision (mixed or not, MixUp or CutMix, λ, box) for the whole batch, ``pair``
one per pair (both members share it), ``elem`` one per sample.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .rng import permutation, symmetric_beta, uniform

MODE_BATCH, MODE_PAIR, MODE_ELEM = 0, 1, 2
MODES = {"batch": MODE_BATCH, "pair": MODE_PAIR, "elem": MODE_ELEM}
WEIGHT_ONE = 256  # the fixed-point scale of ``weight``


@njit(cache=True)
def cutmix_box(state, lam, height, width):
    """A rectangle of area about (1 - lam) * H * W, with its centre uniform over the image, clipped to it.

    Returns ``(y0, y1, x0, x1)`` (half-open). Clipping makes the true area smaller, which is why the caller
    recomputes λ from the returned box.
    """
    side = np.sqrt(1.0 - lam)
    box_h = np.int64(np.round(height * side))
    box_w = np.int64(np.round(width * side))
    centre_y = np.int64(uniform(state) * height)
    centre_x = np.int64(uniform(state) * width)
    y0 = min(max(centre_y - box_h // 2, 0), height)
    x0 = min(max(centre_x - box_w // 2, 0), width)
    y1 = min(max(centre_y - box_h // 2 + box_h, 0), height)
    x1 = min(max(centre_x - box_w // 2 + box_w, 0), width)
    return y0, y1, x0, x1


@njit(cache=True, inline="always")
def clip_lam(lam, lam_low, lam_high):
    """λ limited to ``[lam_low, lam_high]`` (e.g. (0.1, 0.9) keeps every mix visibly two images)."""
    return min(max(lam, lam_low), lam_high)


@njit(cache=True)
def draw_one(state, settings):
    """One mixing decision under ``settings`` (a ``MIX_SETTINGS`` record): ``(weight, y0, y1, x0, x1, lam)``;
    see the module docstring."""
    mixup_alpha, cutmix_alpha = settings.mixup_alpha, settings.cutmix_alpha
    height, width = settings.box_height, settings.box_width
    lam_low, lam_high = settings.lam_low, settings.lam_high
    if uniform(state) >= settings.mix_prob:
        return WEIGHT_ONE, 0, 0, 0, 0, 1.0
    if cutmix_alpha > 0.0 and mixup_alpha > 0.0:
        use_cutmix = uniform(state) < settings.switch_prob
    else:
        use_cutmix = cutmix_alpha > 0.0
    if use_cutmix:
        if height <= 0 or width <= 0:   # the image size is unknown: leave the sample unmixed
            return WEIGHT_ONE, 0, 0, 0, 0, 1.0
        lam = clip_lam(symmetric_beta(state, cutmix_alpha), lam_low, lam_high)
        y0, y1, x0, x1 = cutmix_box(state, lam, height, width)
        true_lam = 1.0 - ((y1 - y0) * (x1 - x0)) / (height * width)
        return WEIGHT_ONE, y0, y1, x0, x1, true_lam
    lam = clip_lam(symmetric_beta(state, mixup_alpha), lam_low, lam_high)
    weight = np.int64(np.round(lam * WEIGHT_ONE))
    return weight, 0, 0, 0, 0, weight / WEIGHT_ONE


@njit(cache=True)
def unmixed_params(n):
    """The parameters of a batch of ``n`` left as it is: own partner, full weight, no box, λ = 1."""
    return np.arange(n), np.full(n, WEIGHT_ONE, np.int32), np.zeros((n, 4), np.int32), np.ones(n, np.float64)


@njit(cache=True)
def draw_mix_params(key, n, settings):
    """All the randomness of one batch, from the 64-bit ``key``: ``(partner, weight, box, lam)``.

    ``settings``: a ``settings.MIX_SETTINGS`` record (alphas, probabilities, mode, λ range, and the size
    ``box_height`` x ``box_width`` CutMix boxes are cut in; <= 0: unknown, CutMix leaves samples unmixed).

    ``partner`` int64 (n,), ``weight`` int32 (n,), ``box`` int32 (n, 4), ``lam`` float64 (n,).
    """
    mixup_alpha, cutmix_alpha, mode = settings.mixup_alpha, settings.cutmix_alpha, settings.mode
    partner, weight, box, lam = unmixed_params(n)
    if n < 2 or (mixup_alpha <= 0.0 and cutmix_alpha <= 0.0):
        return partner, weight, box, lam

    state = np.empty(1, np.uint64)
    state[0] = key
    order = permutation(state, n)
    for k in range(n // 2):
        first, second = order[2 * k], order[2 * k + 1]
        partner[first] = second
        partner[second] = first
    if n % 2 == 1:
        partner[order[n - 1]] = order[0]

    # Which sample's decision each sample follows: everyone the first's (batch), one per pair (pair;
    # the odd one out follows its partner's pair), or its own (elem).
    leader = np.empty(n, np.int64)
    for i in range(n):
        if mode == MODE_BATCH:
            leader[i] = order[0]
        elif mode == MODE_PAIR:
            leader[i] = i if partner[partner[i]] != i else min(i, partner[i])
        else:
            leader[i] = i
    if mode == MODE_PAIR and n % 2 == 1:
        odd = order[n - 1]
        leader[odd] = leader[order[0]]

    # Draw in a fixed order (by sample position) so the stream is reproducible.
    for i in range(n):
        if leader[i] != i:
            continue
        w, y0, y1, x0, x1, sample_lam = draw_one(state, settings)
        weight[i] = w
        box[i, 0], box[i, 1], box[i, 2], box[i, 3] = y0, y1, x0, x1
        lam[i] = sample_lam
    for i in range(n):
        follow = leader[i]
        if follow != i:
            weight[i] = weight[follow]
            box[i, :] = box[follow, :]
            lam[i] = lam[follow]
    return partner, weight, box, lam
