"""Every Prometheus metric of the graphics service, declared once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.media_service import SENT_BYTES_HELP

COMMANDS = Counter(
    "baycast_graphics_commands_total",
    "Graphics commands handled, by verb and result (ok or the error code)",
    ["verb", "result"],
)
INSTANCES_ON_AIR = Gauge(
    "baycast_graphics_instances_on_air", "Template instances on air, all productions together"
)
TEMPLATES_LOADED = Gauge("baycast_graphics_templates_loaded", "Templates available to show")
TEMPLATES_REJECTED = Counter(
    "baycast_graphics_templates_rejected_total", "Template files refused because of an error"
)
RENDER_SECONDS = Histogram(
    "baycast_graphics_render_seconds",
    "Time to render an instance's elements at one size (Pillow, off the event loop)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
COMPOSE_SECONDS = Histogram(
    "baycast_graphics_compose_seconds",
    "Time to compose one layer frame's dirty rectangles (off the event loop)",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.1),
)
LAYER_FRAMES = Counter(
    "baycast_graphics_layer_frames_total", "Layer frames sent with patches (keepalives excluded)"
)
PATCH_BYTES = Counter(
    "baycast_graphics_patch_bytes_total", "Premultiplied RGBA bytes sent in layer patches"
)
TICKS_SKIPPED = Counter(
    "baycast_graphics_ticks_skipped_total",
    "Frame ticks skipped because the layer clock fell behind (animations keep wall time)",
)
SUBSCRIBER_DROPS = Counter(
    "baycast_graphics_subscriber_drops_total",
    "Layer frames dropped for subscribers that read too slowly (each answered by a full refresh)",
)
SUBSCRIBERS = Gauge("baycast_graphics_subscribers", "Open Media.Subscribe streams of layers")
LAYER_STREAMS = Gauge(
    "baycast_graphics_layer_streams", "Layer clocks running (one per production and rendition)"
)
BINDING_ERRORS = Counter(
    "baycast_graphics_binding_errors_total",
    "Failed reads of bound data, by source kind",
    ["source"],
)
BINDING_REFUSALS = Counter(
    "baycast_graphics_binding_refusals_total",
    "Binding sources refused by the data policy (in commands and while watched), by source kind "
    "and rule (host_not_allowed, address_loopback, outside_data_dir ...)",
    ["source", "rule"],
)
SCENES_RUN = Gauge(
    "baycast_graphics_scenes_run",
    "Productions whose scene this replica runs (one replica runs each: docs/adr/0015)",
)


MEDIA_SENT_BYTES = Counter(
    "baycast_graphics_media_sent_bytes_total", SENT_BYTES_HELP, ["handle", "kind"]
)
