"""The role table: who may send what, and that no verb of a command is left unclassified."""

from __future__ import annotations

import pytest

from services.common import errors
from services.common.gen.baycast.v1 import (
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    operators_pb2,
    rundown_pb2,
)
from services.control import roles
from services.control.command_bridge import TARGETS, worth_logging

DIRECTOR = operators_pb2.ROLE_DIRECTOR
GRAPHICS = operators_pb2.ROLE_GRAPHICS
AUDIO = operators_pb2.ROLE_AUDIO
VIEWER = operators_pb2.ROLE_VIEWER


def test_every_verb_of_every_command_is_a_read_or_a_write() -> None:
    for service, (command_type, _reply, _suffix) in TARGETS.items():
        verbs = {f.name for f in command_type.DESCRIPTOR.oneofs_by_name["command"].fields}
        classified = set(roles.READS[service]) | set(roles.WRITES[service])
        assert verbs == classified, (service, verbs ^ classified)
        assert not set(roles.READS[service]) & set(roles.WRITES[service])


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        (
            DIRECTOR,
            ["mixer.cut", "mixer.manual", "rundown.next", "dist.add", "exchange.cue", "gfx.show"],
            [],
        ),
        (
            GRAPHICS,
            ["gfx.show", "gfx.hide", "gfx.update", "gfx.ticker_add"],
            ["mixer.cut", "mixer.audio", "rundown.next", "dist.stop", "exchange.cue"],
        ),
        (
            AUDIO,
            ["mixer.audio"],
            ["mixer.cut", "mixer.ftb", "mixer.talk", "gfx.show", "rundown.start"],
        ),
        (VIEWER, [], ["mixer.cut", "mixer.audio", "gfx.show", "dist.add", "exchange.clear"]),
    ],
)
def test_the_role_table(
    role: operators_pb2.Role.ValueType, allowed: list[str], refused: list[str]
) -> None:
    for kind in allowed:
        roles.authorize(role, kind)
    for kind in refused:
        with pytest.raises(errors.PermissionDenied) as denied:
            roles.authorize(role, kind)
        assert denied.value.field == kind.partition(".")[2]
        assert kind in denied.value.message
    # Reads are everyone's.
    for kind in roles.READ_KINDS:
        roles.authorize(role, kind)


def test_unknown_kinds_and_roles_are_refused() -> None:
    for role in (DIRECTOR, VIEWER):
        with pytest.raises(errors.PermissionDenied):
            roles.authorize(role, "mixer.selfdestruct")
    with pytest.raises(errors.PermissionDenied):
        roles.authorize(operators_pb2.ROLE_UNSPECIFIED, "mixer.audio")
    assert roles.permissions(AUDIO) == sorted(roles.READ_KINDS | {"mixer.audio"})
    assert roles.permissions(VIEWER) == sorted(roles.READ_KINDS)


def test_a_command_without_a_verb_is_refused_with_the_field() -> None:
    assert (
        roles.command_kind("gfx", graphics_pb2.GfxCommand(hide=graphics_pb2.GfxHide()))
        == "gfx.hide"
    )
    for service, command in (
        ("mixer", mixer_pb2.MixerCommand()),
        ("rundown", rundown_pb2.RundownCommand()),
        ("dist", distribution_pb2.DistCommand(production="p")),
        ("exchange", exchange_pb2.ExchangeCommand()),
    ):
        with pytest.raises(errors.InvalidArgument) as refused:
            roles.command_kind(service, command)
        assert refused.value.field == "command"


def test_only_the_t_bar_positions_where_the_hand_lets_go_are_logged() -> None:
    manual = mixer_pb2.MixerCommand.Manual
    assert worth_logging(mixer_pb2.MixerCommand(manual=manual(position=1.0)))
    assert worth_logging(mixer_pb2.MixerCommand(manual=manual(position=0.0)))
    assert not worth_logging(mixer_pb2.MixerCommand(manual=manual(position=0.4)))
    assert worth_logging(mixer_pb2.MixerCommand(cut=mixer_pb2.MixerCommand.Cut()))
