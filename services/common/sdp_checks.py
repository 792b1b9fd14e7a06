"""Checks of an SDP offer's transports that WHIP (ingest) and WHEP (distribution) both make
before aiortc sees the offer."""

from __future__ import annotations

from aiortc.sdp import SessionDescription


def transport_problem(parsed: SessionDescription) -> str | None:
    """Why the offer's transports cannot be answered, or None.

    Each section has a mid of its own, a BUNDLE group names only those (RFC 8843), and a section
    that carries a transport does not end its candidates before giving one. Otherwise aiortc
    bundles onto a transport it never made (and fails in the answer and at close), or prunes the
    transport and answers without a candidate of its own."""
    mids = [m.rtp.muxId for m in parsed.media]
    for media, mid in zip(parsed.media, mids, strict=True):
        if not mid:  # WebRTC names every section (JSEP); aiortc pairs answers by it
            return f"the {media.kind} section has no mid (a=mid)"
        if mids.count(mid) > 1:
            return f"two media sections have the mid {mid!r} (a=mid)"
    bundled: set[str] = set()
    for group in parsed.group:
        if group.semantic == "BUNDLE":
            items = [str(item) for item in group.items]  # aiortc types them int | str
            for mid in items:
                if mid not in mids:
                    return f"a=group:BUNDLE names the mid {mid!r}, which no section has"
            bundled.update(items[1:])  # these ride on the first one's transport
    for media in parsed.media:
        if media.rtp.muxId in bundled or media.ice_candidates or not media.ice_candidates_complete:
            continue
        return f"the {media.kind} section ends its ICE candidates (a=end-of-candidates) without one"
    return None
