"""A production's handles on the media plane: program, clean, preview and multiview, and a
mix-minus for each station (the program's picture with the station's return sound)."""

from __future__ import annotations

import contextlib

from services.common.handles import HandleDirectory
from services.mixer.audio_mixer import MixResult
from services.mixer.outputs import Output
from services.mixer.pictures import Picture

PICTURES = ("program", "clean", "preview", "multiview")
MIXMINUS = "mixminus/"


class ProductionOutputs:
    """The handles of one production, by name (`program`, `mixminus/<station>`, ...)."""

    def __init__(self, production: str, width: int, height: int, fps: int, queue_size: int) -> None:
        self.production = production
        self.width, self.height, self.fps, self.queue_size = width, height, fps, queue_size
        self.by_name = {name: self._output(name) for name in PICTURES}

    def _output(self, name: str) -> Output:
        return Output(
            f"prod/{self.production}/{name}",
            self.width,
            self.height,
            self.fps,
            self.queue_size,
            self.production,
        )

    def __getitem__(self, name: str) -> Output:
        return self.by_name[name]

    def get(self, name: str) -> Output | None:
        return self.by_name.get(name)

    def all(self) -> list[Output]:
        return list(self.by_name.values())

    def wants(self, name: str, pts_us: int) -> bool:
        """Whether a subscriber of `name` takes the picture of `pts_us`."""
        return self.by_name[name].wants_video(pts_us)

    def set_stations(self, stations: list[str]) -> tuple[list[Output], list[Output]]:
        """A mix-minus handle for each of `stations` and no other: (the outputs that went, the
        new ones). The caller withdraws and closes the first, announces the second."""
        wanted = {MIXMINUS + s for s in stations}
        have = {name for name in self.by_name if name.startswith(MIXMINUS)}
        gone = [self.by_name.pop(name) for name in sorted(have - wanted)]
        fresh = [self._output(name) for name in sorted(wanted - have)]
        for output in fresh:
            self.by_name[output.name.split("/", 2)[2]] = output
        return gone, fresh

    def minus_wanted(self) -> set[str]:
        """The stations whose mix-minus someone takes."""
        return {
            name.removeprefix(MIXMINUS)
            for name, output in self.by_name.items()
            if name.startswith(MIXMINUS) and output.subscribers
        }

    def publish_minus_pictures(
        self, stations: set[str], picture: Picture, pts_us: int, capture_us: int
    ) -> None:
        for station in stations:
            self.by_name[MIXMINUS + station].publish_video(picture, pts_us, capture_us)

    def publish_sound(self, mix: MixResult, rate: int, pts_us: int) -> None:
        for name in ("program", "clean", "multiview"):
            self.by_name[name].publish_audio(mix.program, rate, pts_us)
        for station, samples in mix.mixminus.items():
            self.by_name[MIXMINUS + station].publish_audio(samples, rate, pts_us)

    async def announce(self, directory: HandleDirectory, endpoint: str) -> None:
        for output in self.by_name.values():
            await directory.announce(output.name, endpoint)

    async def close(self, directory: HandleDirectory, endpoint: str) -> None:
        """End every subscription and withdraw the handles."""
        for output in self.by_name.values():
            output.close()
            with contextlib.suppress(Exception):
                await directory.withdraw(output.name, endpoint)
