from __future__ import annotations

import fractions
import time

import av
import numpy as np

from services.station.testcard import DEMO_STATIONS, TestCard, station_colours, tone_hz
from services.station.tracks import encode_loop, encode_tone_loop


def test_probe_points_have_the_colours_they_announce() -> None:
    card = TestCard("sz", "深圳台", 640, 360)
    image = card.image(0, time.time())
    y = image[:360]
    flat = image.reshape(-1)
    u = flat[640 * 360 : 640 * 360 + 320 * 180].reshape(180, 320)
    v = flat[640 * 360 + 320 * 180 :].reshape(180, 320)
    for p in card.probe_points():
        px, py = int(p.x * 640), int(p.y * 360)
        assert (y[py, px], u[py // 2, px // 2], v[py // 2, px // 2]) == p.yuv, p.what


def test_the_card_moves_and_the_name_is_drawn() -> None:
    card = TestCard("gz", "广州台", 640, 360)
    a = card.image(1, 1000.0).copy()
    b = card.image(2, 1001.0).copy()
    assert (a != b).sum() > 1000  # box and clock changed
    name_band = a[115:180, 160:480]
    assert (name_band == 235).sum() > 500  # white strokes of 广州台


def test_every_demo_station_has_its_own_tone_and_colour() -> None:
    tones = [tone_hz(s) for s in DEMO_STATIONS]
    assert len(set(tones)) == len(tones) and tones[0] == 400.0
    colours = {station_colours(s) for s in DEMO_STATIONS}
    assert len(colours) == len(DEMO_STATIONS)
    assert 1700 <= tone_hz("some-other-station") < 2700


def test_tone_is_phase_continuous_at_its_frequency() -> None:
    card = TestCard("mo", "澳门台", 64, 36)
    pcm = np.concatenate([card.tone(i * 960, 960) for i in range(50)]).astype(float)
    freq = np.fft.rfftfreq(len(pcm), 1 / 48000)[np.argmax(np.abs(np.fft.rfft(pcm)))]
    assert abs(freq - tone_hz("mo")) < 2


def test_the_packet_loop_starts_with_an_idr_and_has_one_per_second() -> None:
    units = encode_loop(TestCard("hz", "惠州台", 320, 180), fps=10, seconds=2)
    assert len(units) == 20

    def nal_types(unit: bytes) -> set[int]:
        return {unit[i + 3] & 0x1F for i in range(len(unit) - 3) if unit[i : i + 3] == b"\0\0\1"}

    assert {5, 7, 8} <= nal_types(units[0])  # IDR with SPS and PPS in-band
    assert 5 in nal_types(units[10])


def test_the_tone_loop_decodes_to_the_tone_and_splices_without_a_click() -> None:
    card = TestCard("mo", "澳门台", 64, 36)
    packets = encode_tone_loop(card, seconds=1.0)
    assert len(packets) == 50  # 20 ms each
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "stereo", 48000
    pcm = []
    for n, data in enumerate(packets * 3):  # replayed three times, as the track does
        packet = av.Packet(data)
        packet.pts, packet.time_base = n * 960, fractions.Fraction(1, 48000)
        pcm.extend(f.to_ndarray().reshape(-1)[::2] for f in decoder.decode(packet))  # left
    left = np.concatenate(pcm).astype(float)
    freq = np.fft.rfftfreq(len(left), 1 / 48000)[np.argmax(np.abs(np.fft.rfft(left)))]
    assert freq == tone_hz("mo")
    # The second and third passes decode to the same samples: the loop joins itself cleanly.
    second, third = left[48000:96000], left[96000:144000]
    assert np.abs(second - third).max() <= 2
    # No click at a join: around it the sound stays as close to the tone as anywhere else (a
    # loop cut from an encoder's first pass is off by thousands there).
    n = np.arange(len(left))
    w = 2 * np.pi * tone_hz("mo") / 48000
    sine = np.stack([np.sin(w * n), np.cos(w * n)], axis=1)
    fit, *_ = np.linalg.lstsq(sine[50000:], left[50000:], rcond=None)
    error = np.abs(left - sine @ fit)
    assert error[96000 - 300 : 96000 + 300].max() <= 2 * error[60000:84000].max()
