"""Interarrival jitter (RFC 3550 §6.4.1) of a stream's media timestamps against arrival times.

For two packets i and j with media times S and arrival times R (both in seconds), the
difference D(i, j) = (Rj - Ri) - (Sj - Si) says how much later (or sooner) j arrived than its
timestamp predicts; the estimate moves a sixteenth of the way towards each new |D|, as an RTP
receiver's does, so one late packet nudges it and a sustained change moves it in a few dozen.
Used for contributions that carry no RTCP: RTMP (FLV timestamps, TCP arrivals) and SRT (MPEG-TS
decoding timestamps, as libsrt hands the packets over).
"""

from __future__ import annotations

GAIN = 1 / 16
# A jump this large is a new timeline (an encoder restart, a timestamp wrap), not jitter.
MAX_STEP_S = 10.0


class InterarrivalJitter:
    def __init__(self) -> None:
        self.jitter_s = 0.0
        self.samples = 0
        self._previous: tuple[float, float] | None = None  # (media time, arrival)

    @property
    def jitter_ms(self) -> float:
        return self.jitter_s * 1000

    def update(self, media_s: float, arrival_s: float) -> None:
        previous = self._previous
        self._previous = (media_s, arrival_s)
        if previous is None:
            return
        media_step = media_s - previous[0]
        if media_step <= 0 or media_step > MAX_STEP_S:
            return  # the same picture's next packet, a reordering or a jump: no information
        difference = (arrival_s - previous[1]) - media_step
        self.jitter_s += (abs(difference) - self.jitter_s) * GAIN
        self.samples += 1
