"""The station client `baycast station`: publishes a test card or a file to ingest (WHIP), and
follows the station's tally, talkback and cues from the exchange (`events.py`).

Not a service: it runs at the station's side. It shares ingest's ICE address hook
(`services.common.ice`), the one place baycast reaches into aioice.
"""
