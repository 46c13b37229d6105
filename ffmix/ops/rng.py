"""A small counter-based random generator for Numba kernels.

Why not ``np.random`` inside the JIT code? Numba's ``np.random`` is one global stream per thread: seeding it
(as FFCV's ``ImageMixup`` does) disturbs every other random op in the pipeline, and its draws depend on which
thread runs a batch. Here every batch gets its own stream, keyed by (seed, epoch, sample indices), so the
same settings give the same batch for any number of workers, and both mixing ops (image and label) derive
identical parameters without talking to each other.

The stream is SplitMix64 (Steele, Lea & Flood 2014): a 64-bit counter advanced by the golden-ratio constant
and passed through a bijective finaliser. It is statistically strong for this use and trivially seekable.
All functions work on a 1-element ``uint64`` array holding the counter.
"""
from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
# Every literal is a uint64: Numba turns uint64-with-int64 arithmetic into float64.
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0


@njit(cache=True, inline="always")
def mix64(value):
    """SplitMix64's finaliser: a bijection of uint64 that spreads every input bit over the output."""
    z = value
    z = (z ^ (z >> _S30)) * _MIX_1
    z = (z ^ (z >> _S27)) * _MIX_2
    return z ^ (z >> _S31)


@njit(cache=True)
def batch_key(seed, epoch, indices):
    """The stream key of one batch: a hash of the seed, the epoch and the batch's sample indices (in order)."""
    key = mix64(np.uint64(seed) ^ GOLDEN_GAMMA)
    key = mix64(key ^ np.uint64(epoch))
    for position in range(indices.shape[0]):
        key = mix64(key ^ np.uint64(indices[position]))
    return key


@njit(cache=True, inline="always")
def next_u64(state):
    state[0] += GOLDEN_GAMMA
    return mix64(state[0])


@njit(cache=True, inline="always")
def uniform(state):
    """A float64 uniform on [0, 1) with 53 random bits."""
    return np.float64(next_u64(state) >> _S11) * _TWO_POW_MINUS_53


@njit(cache=True)
def standard_normal(state):
    """Box-Muller; 1 - u keeps the logarithm's argument in (0, 1]."""
    radius = np.sqrt(-2.0 * np.log(1.0 - uniform(state)))
    return radius * np.cos(2.0 * np.pi * uniform(state))


@njit(cache=True)
def gamma(state, shape):
    """Gamma(shape, 1) by Marsaglia & Tsang (2000); shape < 1 is boosted to shape + 1 then scaled by U^(1/shape)."""
    if shape < 1.0:
        boost = uniform(state)
        return gamma(state, shape + 1.0) * (1.0 - boost) ** (1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    while True:
        x = standard_normal(state)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = 1.0 - uniform(state)
        if np.log(u) < 0.5 * x * x + d - d * v + d * np.log(v):
            return d * v


@njit(cache=True)
def symmetric_beta(state, alpha):
    """Beta(alpha, alpha) on [0, 1]. For tiny alpha both gammas can underflow to 0; Beta(a, a) tends to a fair
    coin on {0, 1} as a -> 0, so that is what we return then."""
    x = gamma(state, alpha)
    y = gamma(state, alpha)
    if x + y == 0.0:
        return 1.0 if uniform(state) < 0.5 else 0.0
    return x / (x + y)


@njit(cache=True)
def permutation(state, n):
    """A uniform random permutation of 0..n-1 (Fisher-Yates)."""
    order = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = np.int64(next_u64(state) % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]
    return order
