"""The contribution client `baycast station`: publishes a test card or a file to ingest (WHIP).

Not a service: it runs at the station's side. It shares ingest's ICE address hook
(`services.common.ice`), the one place baycast reaches into aioice.
"""
