"""The public surface of ``nosend_proto``: what other projects import."""

import nosend_proto
from nosend_proto import pop3_events, smtp_events


def test_both_engines_share_one_need_data_marker() -> None:
    assert smtp_events.NEED_DATA is pop3_events.NEED_DATA is nosend_proto.NEED_DATA


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in nosend_proto.__all__:
        obj = getattr(nosend_proto, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__doc__, f"{name} has no docstring"
