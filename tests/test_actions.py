"""Each PS3.8 action (Tables 9-6 … 9-9) as a pure function: its effects in order, its next state."""

from __future__ import annotations

import pytest
from linkpair import make_ac, make_pdata, make_rj, make_rq

from netdicom2 import actions
from netdicom2.actions import (
    ACTIONS,
    ActionContext,
    CloseTransport,
    Indicate,
    OpenTransport,
    SendPDU,
    StartTimer,
    StopTimer,
    run,
)
from netdicom2.exceptions import AbortReason
from netdicom2.fsm import NEXT_STATE, Action, State
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import (
    AAbortPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
)

NOW = 100.0
ARTIM = 30.0
DEADLINE = NOW + ARTIM


def ctx(**kwargs: object) -> ActionContext:
    """An action context at NOW with a 30 s ARTIM."""
    return ActionContext(now=NOW, artim_timeout=ARTIM, **kwargs)  # type: ignore[arg-type]


def send(pdu: object) -> SendPDU:
    """The SendPDU effect of a PDU."""
    return SendPDU(pdu, pdu.encode())  # type: ignore[arg-type, attr-defined]


def test_every_action_has_a_function() -> None:
    assert set(ACTIONS) == set(Action)


# --- Table 9-6, association establishment --------------------------------------------------


def test_ae1_issues_transport_connect() -> None:
    assert run(Action.AE_1, ctx(pdu=make_rq())) == actions.Outcome((OpenTransport(),), State.Sta4)


def test_ae2_sends_the_users_associate_rq() -> None:
    rq = make_rq()
    assert run(Action.AE_2, ctx(pdu=rq)) == actions.Outcome((send(rq),), State.Sta5)


def test_ae3_confirms_with_the_received_ac() -> None:
    ac = make_ac()
    assert run(Action.AE_3, ctx(pdu=ac)) == actions.Outcome((Indicate(ac),), State.Sta6)


def test_ae4_confirms_the_reject_and_closes() -> None:
    rj = make_rj(2, 3, 1)
    out = run(Action.AE_4, ctx(pdu=rj))
    assert out.effects == (Indicate(rj), CloseTransport()) and out.next_state is State.Sta1


def test_ae5_starts_artim() -> None:
    assert run(Action.AE_5, ctx()) == actions.Outcome((StartTimer(DEADLINE),), State.Sta2)


def test_ae6_accepts_a_version_1_request_with_an_indication() -> None:
    rq = make_rq()
    out = run(Action.AE_6, ctx(pdu=rq, artim_running=True))
    assert out.effects == (StopTimer(), Indicate(rq)) and out.next_state is State.Sta3


def test_ae6_tests_only_bit_0_of_the_protocol_version() -> None:
    # PS3.8 §9.3.2: 0003H still has bit 0 set (pynetdicom rejects it, §13.2 of the spec notes).
    rq = make_rq(protocol_version=0x0003)
    assert run(Action.AE_6, ctx(pdu=rq)).next_state is State.Sta3


@pytest.mark.parametrize("version", [0x0000, 0x0002, 0xFFFE])
def test_ae6_rejects_a_version_without_bit_0(version: int) -> None:
    out = run(Action.AE_6, ctx(pdu=make_rq(protocol_version=version), artim_running=True))
    rj = AAssociateRjPDU(result=1, source=2, reason_diag=2)
    assert out.effects == (StopTimer(), send(rj), StartTimer(DEADLINE))
    assert out.next_state is State.Sta13
    assert not any(isinstance(e, Indicate) for e in out.effects)  # §7.1.2.6: no indication


def test_ae6_rejects_what_the_acceptable_policy_refuses() -> None:
    def acceptable(rq: AAssociateRqPDU) -> AAssociateRjPDU | None:
        if rq.called_ae_title.strip() != "STORESCP":
            return AAssociateRjPDU(result=1, source=1, reason_diag=7)  # called AE unknown
        return None

    out = run(Action.AE_6, ctx(pdu=make_rq(called="OTHER"), acceptable=acceptable))
    assert out.effects[1] == send(AAssociateRjPDU(result=1, source=1, reason_diag=7))
    assert out.next_state is State.Sta13
    ok = run(Action.AE_6, ctx(pdu=make_rq(called="STORESCP"), acceptable=acceptable))
    assert ok.next_state is State.Sta3


def test_ae6_local_limit_exceeded() -> None:
    limit = AAssociateRjPDU(result=2, source=3, reason_diag=2)
    out = run(Action.AE_6, ctx(pdu=make_rq(), acceptable=lambda rq: limit))
    assert out.effects == (StopTimer(), send(limit), StartTimer(DEADLINE))


def test_ae6_version_check_comes_before_the_policy() -> None:
    calls: list[object] = []
    out = run(
        Action.AE_6,
        ctx(pdu=make_rq(protocol_version=2), acceptable=lambda rq: calls.append(rq)),
    )
    assert calls == [] and out.next_state is State.Sta13


def test_ae6_refuses_a_policy_that_returns_something_else() -> None:
    with pytest.raises(TypeError):
        run(Action.AE_6, ctx(pdu=make_rq(), acceptable=lambda rq: "no"))


def test_ae7_sends_the_ac_and_ae8_the_rj_with_artim() -> None:
    ac, rj = make_ac(), make_rj()
    assert run(Action.AE_7, ctx(pdu=ac)) == actions.Outcome((send(ac),), State.Sta6)
    out = run(Action.AE_8, ctx(pdu=rj))
    assert out == actions.Outcome((send(rj), StartTimer(DEADLINE)), State.Sta13)


# --- Table 9-7, data transfer --------------------------------------------------------------


def test_dt1_sends_and_dt2_indicates() -> None:
    pdata = make_pdata(10)
    assert run(Action.DT_1, ctx(pdu=pdata)) == actions.Outcome((send(pdata),), State.Sta6)
    assert run(Action.DT_2, ctx(pdu=pdata)) == actions.Outcome((Indicate(pdata),), State.Sta6)


# --- Table 9-8, release --------------------------------------------------------------------


def test_release_actions() -> None:
    rq, rp, pdata = AReleaseRqPDU(), AReleaseRpPDU(), make_pdata()
    assert run(Action.AR_1, ctx(pdu=rq)) == actions.Outcome((send(rq),), State.Sta7)
    assert run(Action.AR_2, ctx(pdu=rq)) == actions.Outcome((Indicate(rq),), State.Sta8)
    assert run(Action.AR_3, ctx(pdu=rp)) == actions.Outcome(
        (Indicate(rp), CloseTransport()), State.Sta1
    )
    assert run(Action.AR_4, ctx(pdu=rp)) == actions.Outcome(
        (send(rp), StartTimer(DEADLINE)), State.Sta13
    )
    assert run(Action.AR_5, ctx(artim_running=True)) == actions.Outcome((StopTimer(),), State.Sta1)
    assert run(Action.AR_6, ctx(pdu=pdata)) == actions.Outcome((Indicate(pdata),), State.Sta7)
    assert run(Action.AR_7, ctx(pdu=pdata)) == actions.Outcome((send(pdata),), State.Sta8)
    assert run(Action.AR_9, ctx(pdu=rp)) == actions.Outcome((send(rp),), State.Sta11)
    assert run(Action.AR_10, ctx(pdu=rp)) == actions.Outcome((Indicate(rp),), State.Sta12)


@pytest.mark.parametrize(("requestor", "state"), [(True, State.Sta9), (False, State.Sta10)])
def test_ar8_branches_on_the_association_role(requestor: bool, state: State) -> None:
    rq = AReleaseRqPDU()
    out = run(Action.AR_8, ctx(pdu=rq, is_requestor=requestor))
    assert out == actions.Outcome((Indicate(rq),), state)


# --- Table 9-9, abort ----------------------------------------------------------------------


def test_aa1_builds_its_own_service_user_abort() -> None:
    # The user's primitive (any source/reason) is never echoed: source 0, reason 0 on the wire.
    out = run(Action.AA_1, ctx(pdu=AAbortPDU(source=2, reason_diag=6)))
    assert out.effects == (send(AAbortPDU(source=0, reason_diag=0)), StartTimer(DEADLINE))
    assert out.next_state is State.Sta13


def test_aa1_restarts_a_running_artim() -> None:
    out = run(Action.AA_1, ctx(pdu=make_ac(), artim_running=True))
    assert StartTimer(DEADLINE) in out.effects


@pytest.mark.parametrize("running", [True, False])
def test_aa2_stops_artim_only_if_running_and_closes(running: bool) -> None:
    out = run(Action.AA_2, ctx(artim_running=running))
    expected = ((StopTimer(),) if running else ()) + (CloseTransport(),)
    assert out.effects == expected and out.next_state is State.Sta1


@pytest.mark.parametrize("source", [0, 1, 2])
def test_aa3_indicates_the_received_abort_and_closes(source: int) -> None:
    abort = AAbortPDU(source=source, reason_diag=0 if source == 0 else 2)
    out = run(Action.AA_3, ctx(pdu=abort))
    assert out.effects == (Indicate(abort), CloseTransport()) and out.next_state is State.Sta1


def test_aa4_indicates_a_provider_abort() -> None:
    out = run(Action.AA_4, ctx())
    assert out.effects == (Indicate(AAbortPDU(source=2, reason_diag=0)),)
    assert out.next_state is State.Sta1


def test_aa5_stops_artim_and_aa6_ignores() -> None:
    assert run(Action.AA_5, ctx(artim_running=True)) == actions.Outcome((StopTimer(),), State.Sta1)
    assert run(Action.AA_6, ctx(pdu=make_ac(), artim_running=True)) == actions.Outcome(
        (), State.Sta13
    )


@pytest.mark.parametrize(
    ("reason", "sent"),
    [
        (AbortReason.UNEXPECTED_PDU, 2),
        (AbortReason.UNRECOGNIZED_PDU, 1),
        (AbortReason.INVALID_PDU_PARAMETER_VALUE, 2),
    ],
)
def test_aa7_sends_a_provider_abort_and_leaves_artim(reason: int, sent: int) -> None:
    out = run(Action.AA_7, ctx(abort_reason=reason, artim_running=True))
    assert out.effects == (send(AAbortPDU(source=2, reason_diag=sent)),)
    assert out.next_state is State.Sta13


@pytest.mark.parametrize("reason", [1, 2, 4, 5, 6])
def test_aa8_sends_and_indicates_a_provider_abort_with_the_best_fit_reason(reason: int) -> None:
    out = run(Action.AA_8, ctx(abort_reason=reason))
    abort = AAbortPDU(source=2, reason_diag=reason)
    assert out.effects == (send(abort), Indicate(abort), StartTimer(DEADLINE))
    assert out.next_state is State.Sta13


def test_every_action_lands_in_its_tables_next_state() -> None:
    pdus = {
        Action.AE_6: make_rq(),
        Action.AR_8: AReleaseRqPDU(),
    }
    for action, function in ACTIONS.items():
        pdu = pdus.get(action, make_pdata())
        for requestor in (True, False):
            out = function(ctx(pdu=pdu, is_requestor=requestor))
            assert out.next_state in NEXT_STATE[action], action


def test_an_action_that_needs_a_pdu_says_so() -> None:
    with pytest.raises(ValueError, match="PDU"):
        run(Action.DT_1, ctx())


def test_a_pdata_send_effect_keeps_its_fragments_uncopied_and_equals_the_joined_one() -> None:
    payload = memoryview(bytes(range(256)) * 64)
    pdu = PDataTfPDU([PresentationDataValueItem(1, 0x02, payload)])
    [effect] = actions.dt_1(ctx(pdu=pdu)).effects
    assert isinstance(effect, SendPDU)
    assert effect.parts[-1] is payload  # written by one gathering call, never joined
    assert effect.size == len(pdu.encode()) and effect == SendPDU(pdu, pdu.encode())
    assert repr(effect) == repr(SendPDU(pdu, pdu.encode()))
    with pytest.raises(AttributeError):
        effect.pdu = pdu  # type: ignore[misc]
    with pytest.raises(TypeError):
        SendPDU(pdu)
