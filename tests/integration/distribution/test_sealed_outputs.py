"""Outputs' secrets sealed in `dist_outputs` (docs/adr/0020), read back from the real bucket: a
record that does not open fails alone with its reason, a record in clear or under an older key
is sealed again with the current one, and without a key no secret is taken."""

from __future__ import annotations

import os
import secrets

import pytest

from services.common import errors
from services.common.bus import decode, encode
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.distribution.keyring import Keyring, key_id, read_key_file, sealed_key_id
from tests.integration.distribution.conftest import Show
from tests.support.rtmp import RtmpServer

LIVE, FAILED = dist.OUTPUT_STATUS_LIVE, dist.OUTPUT_STATUS_FAILED


async def raw(show: Show, output_id: str) -> bytes:
    store = await show.bus.nc.jetstream().key_value("dist_outputs")
    return (await store.get(f"{show.prod}.{output_id}")).value or b""


async def put_raw(show: Show, output_id: str, spec: dist.OutputSpec) -> None:
    store = await show.bus.nc.jetstream().key_value("dist_outputs")
    await store.put(f"{show.prod}.{output_id}", encode(spec))


async def reload(show: Show) -> None:
    """The production taken anew, as by a replica after a restart or a takeover."""
    distributor = show.service.distributor
    await distributor.unload(show.prod)
    await distributor.load(show.prod)
    await distributor.productions[show.prod].reconcile()


async def test_unopenable_records_fail_alone_and_old_ones_are_sealed_again(
    show: Show, rtmp: RtmpServer
) -> None:
    tag = secrets.token_hex(4)
    current = show.service.distributor.keyring
    old_key, foreign_key = os.urandom(32), os.urandom(32)

    def spec(output_id: str, key: str) -> dist.OutputSpec:
        return dist.OutputSpec(
            id=output_id,
            production=show.prod,
            kind=dist.OUTPUT_KIND_RTMP,
            url=rtmp.app_url(),
            stream_key=key,
            enabled=True,
        )

    # A good push, added by command: sealed with the current key.
    await show.add(id="good", kind=dist.OUTPUT_KIND_RTMP, url=rtmp.app_url(), stream_key=f"g{tag}")
    stored = decode(await raw(show, "good"), dist.OutputSpec)
    assert sealed_key_id(stored.stream_key) == current.current_id and tag not in str(stored)
    # Records the service did not write this way: under a key it lacks, redirected to another
    # server by a bucket writer, in clear (from before sealing), under an older key it has.
    records = {
        "foreign": Keyring(foreign_key).seal_spec(
            spec("foreign", f"f{tag}"), f"{show.prod}.foreign"
        ),
        "redirected": stored.__class__(),
        "clear": spec("clear", f"c{tag}"),
        "older": Keyring(old_key).seal_spec(spec("older", f"o{tag}"), f"{show.prod}.older"),
    }
    records["redirected"].CopyFrom(
        Keyring(current_key()).seal_spec(spec("redirected", f"r{tag}"), f"{show.prod}.redirected")
    )
    records["redirected"].url = "rtmp://127.0.0.2:1935/live"
    for name, record in records.items():
        await put_raw(show, name, record)
    show.service.distributor.keyring = Keyring(current_key(), [old_key])
    await reload(show)

    for name in ("good", "clear", "older"):
        await show.wait_status(name, LIVE)
    assert all(rtmp.publishers(f"{n[0]}{tag}") == 1 for n in ("good", "clear", "older"))
    foreign = await show.state("foreign")
    redirected = await show.state("redirected")
    assert foreign.status == FAILED and key_id(foreign_key) in foreign.reason, foreign
    assert redirected.status == FAILED and "does not open" in redirected.reason, redirected
    assert foreign.attempts == redirected.attempts == 0  # never started
    with pytest.raises(errors.InvalidArgument, match="cannot start") as refused:
        await show.command(start=dist.OutputRef(id="foreign"))
    assert refused.value.field == "start.id"
    # Stopping it keeps its record as it was (the right key may come back).
    await show.command(stop=dist.OutputRef(id="foreign"))
    kept = decode(await raw(show, "foreign"), dist.OutputSpec)
    assert kept.stream_key == records["foreign"].stream_key and not kept.enabled
    # In clear and under the older key: sealed again with the current key.
    for name in ("clear", "older"):
        again = await raw(show, name)
        assert tag.encode() not in again
        assert sealed_key_id(decode(again, dist.OutputSpec).stream_key) == key_id(current_key())


def current_key() -> bytes:
    return read_key_file(os.environ["BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE"])


async def test_without_a_key_no_secret_is_taken(show: Show) -> None:
    show.service.distributor.keyring = Keyring(None)
    with pytest.raises(errors.InvalidArgument, match="SECRETS_KEY_FILE") as caught:
        await show.add(
            id="push", kind=dist.OUTPUT_KIND_RTMP, url="rtmp://127.0.0.1/live", stream_key="k123456"
        )
    assert caught.value.field == "add.output.stream_key"
    # The key inside the url is a key as well.
    with pytest.raises(errors.InvalidArgument, match="SECRETS_KEY_FILE"):
        await show.add(id="push", kind=dist.OUTPUT_KIND_RTMP, url="rtmp://127.0.0.1/live/k123")
    # An output with no secret is stored as before.
    state = await show.add(id="archive", kind=dist.OUTPUT_KIND_RECORDING)
    assert state.id == "archive"
