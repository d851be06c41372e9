"""``nosend held list|fetch|delete``: the requests land in the account's fetch record,
where the next fetch acts on them (tests/link/test_fetch_held.py shows it does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nosend import held
from nosend.cli import main
from nosend_link.notice import held_id
from nosend_store.fetch_state import FetchRecord, FetchState, FetchStatus
from tests.link.fetch_helpers import LocalSite, local_site


@pytest.fixture
def site(tmp_path: Path) -> LocalSite:
    site = local_site(tmp_path / "site", "pop.isp.test", 995, "skipper", "pw", tls="implicit")
    site.extra = "[link harbour]\n"
    site.write()
    with FetchState.open(site.data_dir, "isp") as state:
        state.hold("big-1", 5_000_000, [("from", "Ann <ann@isp.test>"), ("subject", "photos")])
        state.hold("big-2", 9_000_000)
        state.record("small")
    return site


def records(site: LocalSite) -> dict[str, FetchRecord]:
    with FetchState.open(site.data_dir, "isp") as state:
        return dict(state.records())


def test_list_shows_held_messages_with_their_ids(
    site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["held", "list", "--config", str(site.config_path)]) == 0
    out = capsys.readouterr().out
    assert f"{held_id('isp', 'big-1')}  isp  5000000 bytes  held" in out
    assert "From: Ann <ann@isp.test>" in out and "Subject: photos" in out
    assert held_id("isp", "big-2") in out and held_id("isp", "small") not in out


def test_fetch_and_delete_record_requests(
    site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(site.config_path)
    assert main(["held", "fetch", held_id("isp", "big-1"), "--link", "harbour",
                 "--config", cfg]) == 0
    assert main(["--config", cfg, "held", "delete", held_id("isp", "big-2")]) == 0
    got = records(site)
    assert got["big-1"].status is FetchStatus.FETCH_REQUESTED
    assert got["big-1"].link == "harbour"
    assert got["big-2"].status is FetchStatus.DELETE_REQUESTED
    assert "over link harbour" in capsys.readouterr().out
    # changed their mind: fetch it over any link after all
    assert main(["held", "fetch", held_id("isp", "big-2"), "--config", cfg]) == 0
    assert records(site)["big-2"] == FetchRecord(FetchStatus.FETCH_REQUESTED, 9_000_000)


def test_mistakes_are_one_line_and_status_1(
    site: LocalSite, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = str(site.config_path)
    assert main(["held", "fetch", "0123456789", "--config", cfg]) == 1
    err = capsys.readouterr().err
    assert err == "nosend: no held message 0123456789 (see 'nosend held list')\n"
    assert main(["held", "delete", held_id("isp", "small"), "--config", cfg]) == 1  # delivered
    capsys.readouterr()
    assert main(["held", "fetch", held_id("isp", "big-1"), "--link", "moon", "--config", cfg]) == 1
    assert "no [link moon]" in capsys.readouterr().err
    monkeypatch.setattr(held, "_LOCK_WAIT", 0.0)
    with FetchState.open(site.data_dir, "isp"):  # a fetch is running
        assert main(["held", "list", "--config", cfg]) == 1
    assert "a fetch of that account is running" in capsys.readouterr().err
    assert records(site)["big-1"].status is FetchStatus.HELD
