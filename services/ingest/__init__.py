"""The ingest service: stations contribute live feeds, each becomes a `source/<id>` handle."""
