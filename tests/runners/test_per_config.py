"""The runner-side cache of objects made from one loaded configuration
(``nosend_runners.mail.per_config``): one object per Config, a reload starts afresh, many
threads agree on one object, and a long run of reloads does not grow it without bound."""

from __future__ import annotations

import threading
from pathlib import Path

from nosend_runners.mail import per_config
from nosend_runners.mail.backend import MailBackend, mail_backend
from nosend_runners.mail.per_config import PerConfig
from nosend_store.config import Config
from nosend_store.reload import ConfigHolder
from tests.runners.session_support import config_text, make_config


def test_one_object_per_config_and_a_reload_gets_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    path.write_text(config_text(tmp_path / "data"))
    path.chmod(0o600)
    holder = ConfigHolder(path)
    first = holder.current
    assert mail_backend(first) is mail_backend(first)
    assert isinstance(mail_backend(first), MailBackend)
    assert holder.reload() is None
    second = holder.current
    assert second is not first
    assert mail_backend(second) is not mail_backend(first)
    assert mail_backend(second).config is second
    assert mail_backend(first).config is first  # a session still on the old one


def test_threads_racing_for_the_first_object_all_get_the_same_one(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    made: list[object] = []
    barrier = threading.Barrier(8)

    def make(c: Config) -> object:
        made.append(object())
        return made[-1]

    cache: PerConfig[object] = PerConfig(make)
    got: list[object] = []

    def work() -> None:
        barrier.wait()
        got.append(cache.get(config))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len({id(x) for x in got}) == 1
    assert cache.get(config) is got[0]


def test_old_configurations_are_dropped_but_the_current_one_is_kept(tmp_path: Path) -> None:
    configs = []
    for n in range(per_config.KEEP + 3):
        (tmp_path / str(n)).mkdir()
        configs.append(make_config(tmp_path / str(n)))
    cache: PerConfig[list[int]] = PerConfig(lambda c: [])
    first = cache.get(configs[0])
    for config in configs[1:]:
        current = cache.get(config)
        assert cache.get(config) is current
    assert len(cache._entries) <= per_config.KEEP
    assert cache.get(configs[0]) is not first  # evicted: made afresh on its next use
