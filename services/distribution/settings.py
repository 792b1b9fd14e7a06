"""Distribution settings (`BAYCAST_DISTRIBUTION_<FIELD>`, then `BAYCAST_<FIELD>`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.gen.baycast.v1 import media_pb2
from services.common.settings import ServiceSettings, SettingsError, split_addr
from services.common.steward import DEFAULT_LEASE_SECONDS, DEFAULT_RENEW_SECONDS
from services.common.video_link import MAX_KBPS as MAX_LINK_KBPS
from services.common.video_link import MIN_KBPS as MIN_LINK_KBPS
from services.distribution.keyring import Keyring, KeyringError

DEFAULT_DATA_DIR = ".baycast/data"
# 0 x 0: the program's own size (the first frame decides; the slate uses the fallback before it).
DEFAULT_WIDTH = 0
DEFAULT_HEIGHT = 0
FALLBACK_WIDTH = 1280
FALLBACK_HEIGHT = 720
DEFAULT_FPS = 25
DEFAULT_VIDEO_BITRATE_KBPS = 3000
DEFAULT_X264_PRESET = "veryfast"
DEFAULT_X264_TUNE = "zerolatency"
DEFAULT_KEYFRAME_INTERVAL_S = 2.0
DEFAULT_AUDIO_BITRATE_KBPS = 128
# The program has sent nothing for this long: the slate replaces it (outputs stay connected).
DEFAULT_SLATE_AFTER_S = 1.0
DEFAULT_SLATE_TEXT = "节目即将恢复 / PROGRAM WILL RESUME"
# Each output's own queue: past either bound it drops to the next keyframe.
DEFAULT_OUTPUT_QUEUE_PACKETS = 500
DEFAULT_OUTPUT_QUEUE_BYTES = 4 * 1024 * 1024
# The kernel send buffer of a push's socket: past it, a slow receiver backs up into our queue.
DEFAULT_SEND_BUFFER_BYTES = 256 * 1024
DEFAULT_RETRY_MAX_S = 30.0
# An output retrying for longer than this gives up (failed); 0 retries forever.
DEFAULT_FAIL_AFTER_S = 600.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
# A write that blocks longer than this breaks the connection (a hung receiver).
DEFAULT_WRITE_TIMEOUT_S = 10.0
DEFAULT_HLS_SEGMENT_S = 2.0
DEFAULT_HLS_LIST_SIZE = 6
DEFAULT_RECORDING_SEGMENT_S = 600.0
DEFAULT_VIEWER_WINDOW_S = 30.0
DEFAULT_FFMPEG = "ffmpeg"
# RTMPS: verify the platform's certificate against these authorities.
DEFAULT_TLS_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
# The exchange (docs/adr/0012): WHEP viewers and their encodings.
DEFAULT_ICE_HOSTS = ("127.0.0.1",)
DEFAULT_MAX_VIEWERS = 64
DEFAULT_MAX_SDP_BYTES = 64 * 1024
DEFAULT_WHEP_RATE_PER_S = 5.0
DEFAULT_WHEP_RATE_BURST = 20
DEFAULT_EXCHANGE_HEIGHT = 540
# A return is foldback (the station's monitor and a reporter's phone, often on a cellular link):
# 640×360, as remote-production returns usually are; a station may ask for more (?height=).
DEFAULT_RETURN_HEIGHT = 360
EXCHANGE_HEIGHTS = (360, 540, 720)
# At 540 lines; other heights scale it with the picture's area.
DEFAULT_EXCHANGE_VIDEO_KBPS = 1500
DEFAULT_EXCHANGE_AUDIO_KBPS = 64
# 0: a replica takes as many productions as are wanted.
DEFAULT_MAX_PRODUCTIONS = 0


@dataclass(frozen=True)
class DistributionSettings(ServiceSettings):
    data_dir: str = DEFAULT_DATA_DIR
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    fps: int = DEFAULT_FPS
    video_bitrate_kbps: int = DEFAULT_VIDEO_BITRATE_KBPS
    x264_preset: str = DEFAULT_X264_PRESET
    x264_tune: str = DEFAULT_X264_TUNE
    keyframe_interval_s: float = DEFAULT_KEYFRAME_INTERVAL_S
    audio_bitrate_kbps: int = DEFAULT_AUDIO_BITRATE_KBPS
    slate_after_s: float = DEFAULT_SLATE_AFTER_S
    slate_text: str = DEFAULT_SLATE_TEXT
    output_queue_packets: int = DEFAULT_OUTPUT_QUEUE_PACKETS
    output_queue_bytes: int = DEFAULT_OUTPUT_QUEUE_BYTES
    send_buffer_bytes: int = DEFAULT_SEND_BUFFER_BYTES
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    fail_after_s: float = DEFAULT_FAIL_AFTER_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    hls_segment_s: float = DEFAULT_HLS_SEGMENT_S
    hls_list_size: int = DEFAULT_HLS_LIST_SIZE
    recording_segment_s: float = DEFAULT_RECORDING_SEGMENT_S
    viewer_window_s: float = DEFAULT_VIEWER_WINDOW_S
    ffmpeg: str = DEFAULT_FFMPEG
    # RTMPS outputs: check the platform's certificate against this bundle.
    outputs_tls_verify: bool = True
    outputs_ca_file: str = DEFAULT_TLS_CA_FILE
    # The exchange. ICE as ingest's (docs/adr/0005): the addresses it binds, the UDP port range,
    # the address announced in SDP answers.
    ice_hosts: tuple[str, ...] = DEFAULT_ICE_HOSTS
    public_ip: str = ""
    rtc_port_min: int = 0
    rtc_port_max: int = 0
    # Where stations and players reach this service's HTTP port (WHEP, station events); default:
    # http_addr.
    public_url: str = ""
    max_viewers: int = DEFAULT_MAX_VIEWERS
    max_sdp_bytes: int = DEFAULT_MAX_SDP_BYTES
    whep_rate_per_s: float = DEFAULT_WHEP_RATE_PER_S
    whep_rate_burst: int = DEFAULT_WHEP_RATE_BURST
    exchange_height: int = DEFAULT_EXCHANGE_HEIGHT
    return_height: int = DEFAULT_RETURN_HEIGHT
    exchange_video_kbps: int = DEFAULT_EXCHANGE_VIDEO_KBPS
    exchange_audio_kbps: int = DEFAULT_EXCHANGE_AUDIO_KBPS
    # Pictures from a mixer on another host (ADR 0025): "h264" (compressed by the mixer: the
    # program at program_link_kbps, 0 for its default of 8000 at 1080p, the multiview and the
    # returns' pictures at the default for their size) or "raw" (I420: 622 Mbit/s at 1080p25).
    # On the mixer's host they are read from shared memory either way.
    mixer_link: str = "h264"
    program_link_kbps: int = 0
    # The platform's SRT secret, shared with ingest: a station's passphrase derives from it.
    srt_secret: str = ""
    # Outputs' stream keys and passphrases are sealed in `dist_outputs` with this key (a file
    # holding 32 bytes in base64, mounted from a Secret); the older keys only open what they
    # sealed (rotation). No key: outputs with a secret are refused (docs/adr/0020).
    secrets_key_file: str = ""
    secrets_old_key_files: tuple[str, ...] = ()

    def mixer_compression(self, program: bool = False) -> media_pb2.Compression | None:
        """What distribution asks of a mixer on another host for its pictures (the program's
        at `program_link_kbps`)."""
        if self.mixer_link == "raw":
            return None
        kbps = self.program_link_kbps if program else 0
        return media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264, bitrate_kbps=kbps)

    def keyring(self) -> Keyring:
        """The keys of `secrets_key_file` and `secrets_old_key_files`, read now (at start-up)."""
        try:
            return Keyring.from_files(self.secrets_key_file, self.secrets_old_key_files)
        except KeyringError as exc:
            raise SettingsError(
                f"BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE / SECRETS_OLD_KEY_FILES: {exc}"
            ) from None

    # One replica runs a production's outputs (owned_productions.py, docs/adr/0015): another
    # takes the production this long after a dead owner's last renewal; renewed this often.
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    lease_renew_seconds: float = DEFAULT_RENEW_SECONDS
    max_productions: int = DEFAULT_MAX_PRODUCTIONS
    # One production's CPU: the 1080p25 program encoded once (x264) with its outputs, 0.28 core
    # at the seed's show in BENCHMARKS.md (services/common/capacity.py).
    unit_cores: float = 0.35

    def validate(self) -> None:
        super().validate()
        if self.width % 2 or self.height % 2 or self.width < 0 or self.height < 0:
            raise SettingsError("BAYCAST_DISTRIBUTION_WIDTH/HEIGHT must be even and not negative")
        if (self.width == 0) != (self.height == 0):
            raise SettingsError("set both BAYCAST_DISTRIBUTION_WIDTH and HEIGHT, or neither")
        if not 1 <= self.fps <= 60 or 48_000 % self.fps:
            raise SettingsError("BAYCAST_DISTRIBUTION_FPS must divide 48000 (e.g. 25, 30, 50)")
        if self.video_bitrate_kbps <= 0 or self.audio_bitrate_kbps <= 0:
            raise SettingsError("BAYCAST_DISTRIBUTION_*_BITRATE_KBPS must be positive")
        if self.keyframe_interval_s <= 0 or self.hls_segment_s <= 0:
            raise SettingsError("keyframe interval and HLS segment length must be positive")
        if self.output_queue_packets < 10 or self.output_queue_bytes < 64 * 1024:
            raise SettingsError("output queues need at least 10 packets and 64 KiB")
        if bool(self.rtc_port_min) != bool(self.rtc_port_max) or not (
            0 <= self.rtc_port_min <= self.rtc_port_max <= 65535
        ):
            raise SettingsError(
                "BAYCAST_DISTRIBUTION_RTC_PORT_MIN/MAX must both be set, with min <= max <= 65535"
            )
        if self.mixer_link not in ("h264", "raw"):
            raise SettingsError("BAYCAST_DISTRIBUTION_MIXER_LINK must be h264 or raw")
        if self.program_link_kbps and not MIN_LINK_KBPS <= self.program_link_kbps <= MAX_LINK_KBPS:
            raise SettingsError(
                f"BAYCAST_DISTRIBUTION_PROGRAM_LINK_KBPS must be 0 (the mixer's default) or "
                f"{MIN_LINK_KBPS}-{MAX_LINK_KBPS}"
            )
        if self.max_viewers < 1:
            raise SettingsError("BAYCAST_DISTRIBUTION_MAX_VIEWERS must be at least 1")
        for name in ("exchange_height", "return_height"):
            if getattr(self, name) not in EXCHANGE_HEIGHTS:
                raise SettingsError(
                    f"BAYCAST_DISTRIBUTION_{name.upper()} must be one of {EXCHANGE_HEIGHTS}"
                )
        if not 0 < self.lease_renew_seconds < self.lease_seconds:
            raise SettingsError(
                "BAYCAST_DISTRIBUTION_LEASE_RENEW_SECONDS must be positive and below LEASE_SECONDS"
            )
        if self.max_productions < 0:
            raise SettingsError("BAYCAST_DISTRIBUTION_MAX_PRODUCTIONS must be 0 (no limit) or more")
        if self.secrets_old_key_files and not self.secrets_key_file:
            raise SettingsError(
                "BAYCAST_DISTRIBUTION_SECRETS_OLD_KEY_FILES needs SECRETS_KEY_FILE (the new key)"
            )
        if self.whep_rate_per_s <= 0 or self.whep_rate_burst < 1:
            raise SettingsError(
                "BAYCAST_DISTRIBUTION_WHEP_RATE_PER_S must be positive and WHEP_RATE_BURST >= 1"
            )

    def base_url(self, bound_port: int) -> str:
        """Where stations and players reach this service: `public_url`, else its own address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = split_addr(self.http_addr)
        if host in ("0.0.0.0", "::", ""):
            host = self.advertise_host or "127.0.0.1"
        return f"http://{host}:{bound_port or port}"

    @property
    def keyframe_interval_frames(self) -> int:
        return max(1, round(self.keyframe_interval_s * self.fps))
