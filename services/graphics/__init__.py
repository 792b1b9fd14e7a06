"""The graphics service: broadcast overlays rendered from templates, offered as `gfx/<prod>`."""
