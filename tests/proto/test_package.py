"""The public surface of ``nosend_proto``: what other projects import."""

import nosend_proto
from nosend_proto import pop3_events, pop3_state, smtp_events, smtp_state


def test_both_engines_share_one_need_data_marker() -> None:
    assert smtp_events.NEED_DATA is pop3_events.NEED_DATA is nosend_proto.NEED_DATA


def test_every_exported_name_exists_and_is_documented() -> None:
    assert len(set(nosend_proto.__all__)) == len(nosend_proto.__all__)
    for name in nosend_proto.__all__:
        obj = getattr(nosend_proto, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_names_both_protocols_use_stay_in_their_modules() -> None:
    for name in nosend_proto.SHARED_EVENT_NAMES:
        assert name not in nosend_proto.__all__ and not hasattr(nosend_proto, name)
        assert getattr(smtp_events, name) is not getattr(pop3_events, name)


def test_every_other_event_is_importable_from_the_package() -> None:
    for module in (smtp_events, pop3_events):
        for name in set(module.__all__) - nosend_proto.SHARED_EVENT_NAMES:
            assert getattr(nosend_proto, name) is getattr(module, name), name
    assert nosend_proto.SMTPServerConnection is smtp_state.ServerConnection
    assert nosend_proto.POP3ServerConnection is pop3_state.ServerConnection
    assert nosend_proto.SMTPState is smtp_state.SMTPState
