"""What a scene shows: each box's source as its newest good frame, held while it is late,
slated once it is silent past the hold time, replaced by its backup past the backup time; the
scene composed from its boxes, with their borders and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer import layouts, slates
from services.mixer.feeds import FeedSet, Held
from services.mixer.layouts import PlacedBox
from services.mixer.pictures import WHITE_YUV, Picture, blit, border, hex_to_yuv
from services.mixer.transition_state import Scene

BACKGROUND_YUV = (28, 132, 124)


@dataclass
class Rendered:
    sources: set[str]
    capture_time_us: int
    showing: dict[str, str]


class SceneRenderer:
    """Composes the scenes of one production from its feeds."""

    def __init__(self, production: mixer_pb2.Production, feeds: FeedSet) -> None:
        self.feeds = feeds
        self.width, self.height = production.width, production.height
        self.interval = 1 / production.fps
        self._placed: dict[tuple[bytes, int, int], list[PlacedBox]] = {}
        self.configure(production)

    def configure(self, production: mixer_pb2.Production) -> None:
        """The production's sources and timing (at start, and when it is edited live)."""
        self.names = {s.id: s.name for s in production.sources}
        self.backups = {s.id: s.backup for s in production.sources if s.backup}
        self.hold_s = production.hold_ms / 1000
        self.backup_after_s = production.backup_after_ms / 1000

    def ready(self, scene: Scene) -> bool:
        for box in self.boxes(scene.layout):
            source = box.source or scene.bus
            if not source:
                continue
            w, h = box.source_size()
            if self.feeds.get(source, w, h).latest is None and self.feeds.age(source) < self.hold_s:
                return False
        return True

    def boxes(self, layout: mixer_pb2.Layout, width: int = 0, height: int = 0) -> list[PlacedBox]:
        width, height = width or self.width, height or self.height
        key = (layout.SerializeToString(deterministic=True), width, height)
        boxes = self._placed.get(key)
        if boxes is None:
            boxes = layouts.place(layout, width, height)
            if len(self._placed) > 64:
                self._placed.clear()
            self._placed[key] = boxes
        return boxes

    def touch(self, scene: Scene) -> set[str]:
        """Keep the scene's renditions subscribed (a take is then instant); its sources."""
        sources = set()
        for box in self.boxes(scene.layout):
            source = box.source or scene.bus
            if source:
                self.feeds.get(source, *box.source_size())
                sources.add(source)
        return sources

    def render(self, scene: Scene, out: Picture, now: float) -> Rendered:
        boxes = self.boxes(scene.layout)
        if not any(b.width == out.width and b.height == out.height for b in boxes):
            out.fill(BACKGROUND_YUV)
        sources: set[str] = set()
        showing: dict[str, str] = {}
        capture, biggest = 0, 0
        for box in boxes:
            source = box.source or scene.bus
            if not source:
                continue
            held, status = self.picture_for(source, *box.source_size(), now)
            sources.add(source)
            if status.startswith("backup:"):
                sources.add(status.removeprefix("backup:"))  # the backup is on air: tally it
            showing[source] = status
            if held is None:
                blit(
                    out,
                    slates.slate(self.names[source], box.width, box.height),
                    box.x,
                    box.y,
                    box.width,
                    box.height,
                )
            else:
                blit(out, held.picture, box.x, box.y, box.width, box.height, box.crop)
                if box.width * box.height > biggest:
                    capture, biggest = held.capture_time_us, box.width * box.height
            if box.border_px:
                border(
                    out,
                    box.x,
                    box.y,
                    box.width,
                    box.height,
                    box.border_px,
                    hex_to_yuv(box.border_color, WHITE_YUV),
                )
            if box.label:
                self.label(out, box.label, box.x, box.y + box.height, box.height)
        return Rendered(sources, capture, showing)

    def picture_for(
        self,
        source: str,
        width: int,
        height: int,
        now: float,
        *,
        on_air: bool = True,
        fps: int = 0,
    ) -> tuple[Held | None, str]:
        """The newest good frame for a box of `source` (or its backup), and what it is.

        On air, a source back after a loss stays replaced (backup, else slate) until it has
        delivered for the clear time; monitors (`on_air=False`) show it as soon as it is back,
        and may take fewer frames a second (`fps`; 0 is the production's rate).
        """
        shown, status = source, "live"
        backup = self.backups.get(source)
        age = self.feeds.age(source)
        clearing = on_air and self.feeds.clearing(source)
        if backup and (age > self.hold_s or clearing):
            self.feeds.get(backup, width, height, fps)  # roll the backup before it is needed
            if (age > self.backup_after_s or clearing) and self.feeds.age(backup) < self.hold_s:
                shown, status = backup, f"backup:{backup}"
        if clearing and shown == source:
            self.feeds.get(source, width, height, fps)  # stay subscribed while it clears
            return None, "slate"
        held = self.feeds.get(shown, width, height, fps).latest
        if held is None or now - held.received > self.hold_s:
            other = self.feeds.any_frame(shown)
            held = other if other is not None and now - other.received <= self.hold_s else None
        if held is None:
            return None, "slate"
        if status == "live" and now - held.received > 2 * self.interval:
            status = "held"
        return held, status

    def monitor_picture(
        self, source: str, width: int, height: int, now: float, fps: int
    ) -> Held | None:
        """A multiview tile of `source`: a thumbnail of a frame it already sends at another size
        (a program box), else a feed of its own at tile size and `fps`.

        One subscription per source on air instead of two halves what ingest scales and sends;
        the thumbnail's nearest-neighbour scaling costs the mixer well under a millisecond.
        """
        if self.feeds.subscribed_elsewhere(source, width, height):
            held = self.feeds.any_frame(source)
            if held is not None and now - held.received <= self.hold_s:
                return held
        held, _status = self.picture_for(source, width, height, now, on_air=False, fps=fps)
        return held

    def label(self, out: Picture, text: str, x: int, bottom: int, box_height: int) -> None:
        height = max(16, min(40, box_height // 10)) // 2 * 2
        pic = slates.label(text, height)
        w = min(pic.width, out.width - x) // 2 * 2
        y = max(0, bottom - height)
        if w > 0:
            crop = (0.0, 0.0, 1 - w / pic.width, 0.0)
            blit(out, pic, x, y, w, height, crop)
