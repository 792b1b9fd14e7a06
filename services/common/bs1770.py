"""The ITU-R BS.1770 K-weighting filter and channel weights, shared by the loudness meters.

Monitoring measures the program's loudness (momentary, short-term, integrated, range, true
peak: EBU R128); the mixer shows every source's short-term loudness on its meters. Both weigh
the signal with this filter: BS.1770's two biquads, derived for any sample rate from their
analogue prototypes, the way libebur128 does.
"""

from __future__ import annotations

import math

import numpy as np

# BS.1770 weight of the surround channels Ls, Rs (L, R, C weigh 1; LFE is not measured).
SURROUND_WEIGHT = 1.41


def k_weighting_sos(sample_rate: float) -> np.ndarray:
    """The K-weighting pre-filter as second-order sections for `sample_rate`."""
    # Stage 1: high shelf modelling the acoustic effect of the head.
    f0 = 1681.974450955533
    gain_db = 3.999843853973347
    q = 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / q + k * k) / a0,
    ]
    # Stage 2: the RLB high pass.
    f0 = 38.13547087602444
    q = 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def channel_weights(channels: int) -> np.ndarray:
    """BS.1770 weights in the usual channel order L, R, C, LFE, Ls, Rs (LFE weighs 0)."""
    if channels <= 3:
        return np.ones(channels)
    weights = np.ones(channels)
    weights[3] = 0.0
    weights[4:6] = SURROUND_WEIGHT
    return weights
