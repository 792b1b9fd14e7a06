"""The SDP targets: offers a WHIP publisher or a WHEP viewer POSTs, as the endpoints take them.

Each endpoint reads the body as UTF-8 (`services.common.web.read_sdp`), checks it
(`check_offer`: 400 with the reason), then answers it: `WhipSource.answer` (SdpError: 400) or
`Viewer.answer` (InvalidArgument: 400), gathering on loopback here. Anything else escaping the
answer, or the peer connection's close after it, is what the endpoints turn into a 503 "cannot
set up the WebRTC session now" (or a 500) for an offer that was simply malformed. The property:
only those refusals come out, and what `check_offer` accepts holds what its docstring promises.
Offers are drawn by mutating the real offers of the corpus line by line and token by token
(see `mutated_offers`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from services.common import errors, ice
from services.common.credentials import Principal
from services.distribution import whep_offer as whep_checks
from services.distribution.access import parse_feed
from services.distribution.packet_fanout import Fanout
from services.distribution.viewers import Viewer
from services.ingest import webrtc_source
from services.ingest.webrtc_source import SdpError, WhipSource

CORPUS = Path(__file__).parent / "corpus"

# Values that have broken parsers before: empty, signs, overflow, wrong kinds, separators.
TOKENS = [
    *["", "0", "1", "-1", "9", "127", "128", "65535", "65536", "4294967296", "1e9", "0x1f"],
    *["99999999999999999999", "NaN", "x" * 300, " ", ":", "/", "=", ";", ",", "\t", "é", "好"],
    *["IN", "IP4", "IP6", "::1", "127.0.0.1", "0.0.0.0", "UDP/TLS/RTP/SAVPF", "RTP/AVP"],
    *["DTLS/SCTP", "UDP/DTLS/SCTP", "webrtc-datachannel", "audio", "video", "application"],
    *["sendonly", "recvonly", "sendrecv", "inactive", "actpass", "active", "passive"],
    *["H264/90000", "VP8/90000", "VP9/90000", "AV1/90000", "opus/48000/2", "rtx/90000"],
    *["PCMU/8000", "sha-256", "sha-1", "sha-512", "BUNDLE", "FID", "host", "typ", "udp", "tcp"],
    *["profile-level-id=42e01f", "profile-level-id=640c1f", "profile-level-id=zz"],
    *["packetization-mode=1", "packetization-mode=x", "apt=96", "apt=", "42e01f", "4d001f"],
]
# Lines to insert: known attributes (their values drawn from TOKENS), and whole section heads.
LINE_HEADS = [
    *["a=group:BUNDLE ", "a=mid:", "a=rtpmap:", "a=fmtp:", "a=rtcp-fb:", "a=ssrc:"],
    *["a=ssrc-group:FID ", "a=candidate:", "a=ice-ufrag:", "a=ice-pwd:", "a=ice-lite"],
    *["a=ice-options:", "a=fingerprint:sha-256 ", "a=setup:", "a=extmap:", "a=rtcp-mux"],
    *["a=rtcp:", "a=sctp-port:", "a=max-message-size:", "a=sctpmap:", "a=msid:", "a="],
    *["a=end-of-candidates", "a=sendonly", "a=recvonly", "a=inactive", "c=IN IP4 ", "b=AS:"],
    *["m=audio 9 UDP/TLS/RTP/SAVPF ", "m=video 9 UDP/TLS/RTP/SAVPF "],
    *["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=application 9 DTLS/SCTP "],
    *["o=- 1 2 IN IP4 ", "s=", "t=", "v=", "x=", "=", ""],
]
_SEPARATORS = re.compile(r"([ :/=;,])")


def offer_text(path: Path) -> str:
    """A corpus file as the endpoint has it: the body decoded as UTF-8."""
    return path.read_bytes().decode()


@cache
def seed_offers(target: str) -> tuple[str, ...]:
    """The real offers of a target's corpus (`whip_offer` or `whep_offer`)."""
    return tuple(offer_text(p) for p in sorted((CORPUS / target).iterdir()))


@cache
def _line_pool() -> tuple[str, ...]:
    return tuple(line for t in TARGETS for offer in seed_offers(t) for line in offer.splitlines())


TARGETS = ("whip_offer", "whep_offer")


def _sections(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each media section: from its m= line to the next one."""
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    return list(zip(starts, [*starts[1:], len(lines)][: len(starts)], strict=True))


@st.composite
def _edit(draw: st.DrawFn, lines: list[str]) -> list[str]:
    """`lines` with one edit a hand-written or broken peer might make."""
    n = len(lines)
    # Line 0 (v=0) only now and then: Hypothesis favours small draws, and a first line that
    # is not v=0 is refused before anything else is looked at.
    first = 0 if draw(st.integers(0, 19)) == 19 else min(1, n - 1)
    i, j = (draw(st.integers(max(0, first), max(0, n - 1))) for _ in range(2))
    kind = draw(st.sampled_from(["drop", "copy", "swap", "foreign", "token", "insert", "section"]))
    if not lines:
        kind = "insert"
    if kind == "drop":
        return lines[:i] + lines[i + 1 :]
    if kind == "copy":
        return [*lines[:j], lines[i], *lines[j:]]
    if kind == "swap":
        lines = list(lines)
        lines[i], lines[j] = lines[j], lines[i]
        return lines
    if kind == "foreign":  # a line of another peer's offer, in place of one of this one
        return [*lines[:i], draw(st.sampled_from(_line_pool())), *lines[i + 1 :]]
    if kind == "token":
        parts = _SEPARATORS.split(lines[i])
        k = draw(st.integers(0, len(parts) - 1))
        parts[k] = draw(st.sampled_from(TOKENS) | st.text(max_size=12))
        return [*lines[:i], "".join(parts), *lines[i + 1 :]]
    if kind == "insert":
        values = draw(st.lists(st.sampled_from(TOKENS), max_size=4))
        return [*lines[:i], draw(st.sampled_from(LINE_HEADS)) + " ".join(values), *lines[i:]]
    sections = _sections(lines)
    if not sections:
        return lines
    start, end = draw(st.sampled_from(sections))
    if draw(st.booleans()):  # a media section dropped, or given twice
        return lines[:start] + lines[end:]
    return lines[:end] + lines[start:end] + lines[end:]


@st.composite
def mutated_offers(draw: st.DrawFn, target: str) -> str:
    """A real offer (mostly of `target`'s own kind) with one to six edits, sometimes cut short,
    with CRLF or LF endings."""
    own = draw(st.integers(0, 3)) < 3  # Hypothesis favours small draws
    kind = target if own else next(t for t in TARGETS if t != target)
    lines = draw(st.sampled_from(seed_offers(kind))).splitlines()
    for _ in range(draw(st.integers(1, 6))):
        lines = draw(_edit(lines))
    text = draw(st.sampled_from(["\r\n", "\n"])).join(lines) + "\r\n"
    if draw(st.integers(0, 9)) == 9:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def offers(target: str) -> st.SearchStrategy[str]:
    """Mostly mutated real offers; now and then text that only starts like SDP."""
    return st.one_of(mutated_offers(target), st.text().map(lambda t: "v=0\r\n" + t))


def whip_offers() -> st.SearchStrategy[str]:
    return offers("whip_offer")


def whep_offers() -> st.SearchStrategy[str]:
    return offers("whep_offer")


# -- the properties -------------------------------------------------------------------------------


@cache
def _install_ice_hooks() -> None:
    # aioice gathers through ice.py's hooks only once they are installed: install them,
    # keeping whatever default policy this process has; the answers below gather on loopback.
    default = ice.policy()
    ice.configure(default.hosts, default.port_min, default.port_max)


def _run(answer: Coroutine[Any, Any, None]) -> None:
    _install_ice_hooks()
    asyncio.run(answer)  # a loop per offer: whatever aiortc leaves running ends with it


LOOPBACK = ice.IcePolicy(("127.0.0.1",))


class _Encoding:
    """What a Viewer uses of a shared encoding while it answers: its fan-out and keyframes."""

    def __init__(self) -> None:
        self.fanout = Fanout()

    def request_keyframe(self) -> None:
        pass


async def _whip_answer(text: str) -> None:
    """What WhipEndpoint._post does with an offer check_offer took: SdpError is its 400."""
    source = WhipSource("fuzz", "fuzz", "fuzz")
    try:
        with ice.applied(LOOPBACK):
            await source.answer(text)
    except SdpError:
        pass
    finally:
        await source.close()


async def _whep_answer(text: str) -> None:
    """What ViewerRegistry.open does with an offer check_offer took: InvalidArgument is its
    400 (anything else it answers 503, "cannot set up the WebRTC session now")."""
    viewer = Viewer(
        parse_feed("fuzz", "program"),
        Principal("station", "fuzz", "fuzz"),
        _Encoding(),  # type: ignore[arg-type]
        _Encoding(),  # type: ignore[arg-type]
        on_end=lambda _viewer, _reason: None,
    )
    try:
        with ice.applied(LOOPBACK):
            await viewer.answer(text)
    except errors.InvalidArgument:
        pass
    finally:
        await viewer.close()


def whip_offer(text: str) -> None:
    """An offer POSTed to /whip/<station>: SdpError, or an offer aiortc takes or refuses in the
    ways the endpoint answers 400."""
    try:
        parsed = webrtc_source.check_offer(text)
    except SdpError:
        return
    media = [m for m in parsed.media if m.kind in ("audio", "video")]
    assert media, "accepted an offer with no audio or video"
    for m in media:
        assert m.direction in ("sendonly", "sendrecv"), m.direction
        assert m.ice is not None and m.ice.usernameFragment
        assert m.dtls is not None and m.dtls.fingerprints
    _run(_whip_answer(text))


def whep_offer(text: str) -> None:
    """An offer POSTed to /whep/<production>/<handle>: OfferError, or an offer with one audio
    and one video section that aiortc takes or refuses in the ways the endpoint answers 400."""
    try:
        parsed = whep_checks.check_offer(text)
    except whep_checks.OfferError:
        return
    media = [m for m in parsed.media if m.kind in ("audio", "video")]
    assert sorted(m.kind for m in media) == ["audio", "video"]
    for m in media:
        assert m.direction in ("recvonly", "sendrecv"), m.direction
        assert m.ice is not None and m.ice.usernameFragment
        assert m.dtls is not None and m.dtls.fingerprints
        codecs = m.rtp.codecs
        ours = whep_checks.is_shared_h264 if m.kind == "video" else whep_checks.is_opus
        assert any(ours(c) for c in codecs)
    _run(_whep_answer(text))
