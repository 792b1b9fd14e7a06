"""SDP fuzzing, bounded: the real offers replayed through both endpoints' checks and answers,
the regression seeds refused with their reason, then mutated offers from a fixed seed
(tests/fuzz/run.py says how to run long).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.distribution import whep_offer
from services.ingest import webrtc_source
from tests.fuzz import sdp
from tests.fuzz.run import corpus, fuzz_hypothesis, long_seconds

REGRESSION = "regression-"  # seeds that once got past a check: refused now, with this reason
REASONS = {
    "bundle-names-unknown-mid": "a=group:BUNDLE names the mid",
    "no-direction": "has no direction",
    "no-mid": "has no mid",
    "duplicate-mid": "two media sections have the mid",
    "end-of-candidates-without-one": "ends its ICE candidates",
    "unknown-section-kind": "a section of kind 'text'",
}


def _real(target: str) -> list[Path]:
    return [p for p in corpus(target) if not p.name.startswith(REGRESSION)]


def _regressions(target: str) -> list[Path]:
    return [p for p in corpus(target) if p.name.startswith(REGRESSION)]


@pytest.mark.parametrize("path", _real("whip_offer"), ids=lambda p: p.name)
def test_real_whip_offers_are_answered(path: Path) -> None:
    text = sdp.offer_text(path)
    kinds = sorted(m.kind for m in webrtc_source.check_offer(text).media)
    assert kinds == ["audio", "video"]
    sdp.whip_offer(text)


@pytest.mark.parametrize("path", _real("whep_offer"), ids=lambda p: p.name)
def test_real_whep_offers_are_answered(path: Path) -> None:
    text = sdp.offer_text(path)
    kinds = sorted(m.kind for m in whep_offer.check_offer(text).media)
    assert kinds == ["audio", "video"]
    sdp.whep_offer(text)


@pytest.mark.parametrize("path", _regressions("whip_offer"), ids=lambda p: p.name)
def test_whip_regressions_are_refused_with_the_reason(path: Path) -> None:
    reason = REASONS[path.stem.removeprefix(REGRESSION)]
    with pytest.raises(webrtc_source.SdpError, match=reason):
        webrtc_source.check_offer(sdp.offer_text(path))
    sdp.whip_offer(sdp.offer_text(path))


@pytest.mark.parametrize("path", _regressions("whep_offer"), ids=lambda p: p.name)
def test_whep_regressions_are_refused_with_the_reason(path: Path) -> None:
    reason = REASONS[path.stem.removeprefix(REGRESSION)]
    with pytest.raises(whep_offer.OfferError, match=reason):
        whep_offer.check_offer(sdp.offer_text(path))
    sdp.whep_offer(sdp.offer_text(path))


@pytest.mark.parametrize("target", ["whip_offer", "whep_offer"])
def test_mutated_offers_are_answered_or_refused_with_a_reason(target: str) -> None:
    drawn = fuzz_hypothesis(target, seconds=long_seconds())
    assert drawn >= 1
