"""Live claims without a bus: this instance's own check alone, and the settings that time them."""

from __future__ import annotations

import pytest

from services.common.bus import Bus
from services.common.settings import SettingsError, load_settings
from services.ingest.live_claims import Claim, LiveClaims
from services.ingest.settings import IngestSettings


async def test_without_a_bus_a_source_is_claimed_on_this_instance_s_check_alone() -> None:
    claims = LiveClaims(Bus("nats://127.0.0.1:1", "never-connected"), "a", ttl_s=6, refresh_s=2)
    assert await claims.claim("gz") is Claim.TAKEN
    assert await claims.claim("gz") is Claim.LIVE_HERE
    assert claims.held["gz"].revision == 0  # nothing written: a refresh writes it later
    await claims.release("gz")
    assert claims.held == {}
    assert await claims.claim("gz") is Claim.TAKEN


@pytest.mark.parametrize(
    ("ttl", "refresh", "valid"),
    [("6", "2", True), ("4", "2", True), ("3", "2", False), ("6", "0", False)],
)
def test_a_claim_outlives_one_late_refresh(ttl: str, refresh: str, valid: bool) -> None:
    environ = {
        "BAYCAST_INGEST_LIVE_CLAIM_TTL_S": ttl,
        "BAYCAST_INGEST_LIVE_CLAIM_REFRESH_S": refresh,
    }
    if valid:
        settings = load_settings(IngestSettings, "ingest", environ=environ)
        assert settings.live_claim_ttl_s == float(ttl)
    else:
        with pytest.raises(SettingsError, match="LIVE_CLAIM"):
            load_settings(IngestSettings, "ingest", environ=environ)
