"""``nosend.privileges``: whom to switch to, the switch itself, the data folder handed over.

The decision (:func:`plan_switch`) is tested anywhere, with the process ids faked. The
switch and the change of owners need root: they use the ``nobody`` account (no account
is created) and run the switch in a forked child, so the test process keeps root.
Skipped when not root, failed under CI, which runs the tests as root.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend.privileges import PrivilegeError, drop_privileges, give_data_dir, plan_switch
from nosend_store.config import RunAs

ALICE = RunAs("alice", 1000, "alice", 1000, line=7)


def fake_ids(monkeypatch: pytest.MonkeyPatch, uid: int, gid: int, groups: list[int]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    monkeypatch.setattr(os, "getegid", lambda: gid)
    monkeypatch.setattr(os, "getgroups", lambda: groups)


def test_no_user_means_no_switch() -> None:
    assert plan_switch(None, "mail.cfg") is None


def test_root_switches_unless_the_user_is_root(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ids(monkeypatch, 0, 0, [0])
    assert plan_switch(ALICE, "mail.cfg") is ALICE
    assert plan_switch(RunAs("root", 0, "root", 0), "mail.cfg") is None


def test_the_user_itself_has_nothing_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ids(monkeypatch, 1000, 1000, [1000])
    assert plan_switch(ALICE, "mail.cfg") is None
    fake_ids(monkeypatch, 1000, 50, [50, 1000])  # the group as a supplementary one
    assert plan_switch(ALICE, "mail.cfg") is None


def test_another_user_cannot_switch_and_is_told_which_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_ids(monkeypatch, 1001, 1001, [1001])
    with pytest.raises(PrivilegeError) as info:
        plan_switch(ALICE, "/etc/nosend/mail.cfg")
    message = str(info.value)
    assert message.startswith("/etc/nosend/mail.cfg:7: user = alice: this process runs as uid")
    assert "not root, so it cannot switch to alice" in message
    fake_ids(monkeypatch, 1000, 1001, [1001])  # right user, wrong group
    with pytest.raises(PrivilegeError) as info:
        plan_switch(ALICE, "mail.cfg")
    assert "group = alice" in str(info.value)


@pytest.fixture
def nobody() -> RunAs:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("needs root (CI runs the tests as root)")
        pytest.skip("needs root: changes owners and switches user")
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.fail("no 'nobody' account on this system")
    import grp

    return RunAs("nobody", entry.pw_uid, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_gid)


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def owner(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid


def test_drop_privileges_cannot_be_undone(nobody: RunAs) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: switch, then report what it sees
        os.close(read)
        try:
            drop_privileges(nobody)
            try:
                os.setuid(0)
                regained = True
            except PermissionError:
                regained = False
            report = {
                "uids": os.getresuid(),
                "gids": os.getresgid(),
                "groups": sorted(os.getgroups()),
                "regained": regained,
            }
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            report = {"error": repr(e)}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        report = json.loads(f.read())
    os.waitpid(pid, 0)
    uid, gid = nobody.uid, nobody.gid
    assert report == {
        "uids": [uid, uid, uid],
        "gids": [gid, gid, gid],
        # initgroups: the account's own groups, none of root's
        "groups": sorted(set(os.getgrouplist("nobody", gid))),
        "regained": False,
    }
    assert 0 not in report["groups"] or gid == 0


def test_give_data_dir_makes_the_folders_and_hands_over_the_tree(nobody: RunAs, data: Path) -> None:
    (data / "mail" / "user" / "new").mkdir(parents=True)
    message = data / "mail" / "user" / "new" / "1.x.host"
    message.write_text("root's leftover\n")
    changed = give_data_dir(data, nobody, recursive=True)
    ids = (nobody.uid, nobody.gid)
    for path in (data, data / "mail", data / "queue", data / "state", message):
        assert owner(path) == ids, path
    assert stat.S_IMODE((data / "queue").stat().st_mode) == 0o700
    assert changed == 7  # data, mail, queue, state, mail/user, mail/user/new, the message
    assert give_data_dir(data, nobody, recursive=True) == 0  # nothing left to change


def test_give_data_dir_never_follows_a_link(nobody: RunAs, data: Path, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root only\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "file").write_text("root's\n")
    (data / "mail").mkdir(parents=True)
    (data / "mail" / "to-a-file").symlink_to(secret)
    (data / "mail" / "to-a-folder").symlink_to(elsewhere)
    (data / "queue").symlink_to(elsewhere)  # even one of the usual folders
    give_data_dir(data, nobody, recursive=True)
    give_data_dir(data, nobody, recursive=False)
    for path in (secret, elsewhere, elsewhere / "file"):
        assert owner(path) == (0, 0), path
    assert owner(data / "mail") == (nobody.uid, nobody.gid)


def test_give_data_dir_follows_a_linked_data_dir(nobody: RunAs, tmp_path: Path) -> None:
    # /var/lib/nosend -> /srv/mail is the administrator's choice, not an attack.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    give_data_dir(tmp_path / "link", nobody, recursive=True)
    assert owner(real) == (nobody.uid, nobody.gid)
    assert owner(real / "state") == (nobody.uid, nobody.gid)


def test_give_data_dir_without_recursion_fixes_only_the_top(nobody: RunAs, data: Path) -> None:
    deep = data / "mail" / "user"
    deep.mkdir(parents=True)
    assert give_data_dir(data, nobody, recursive=False) == 4  # data and its 3 folders
    assert owner(data / "mail") == (nobody.uid, nobody.gid)
    assert owner(deep) == (0, 0)


def test_init_with_user_lets_its_group_read_mail_cfg(
    nobody: RunAs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nosend.cli import main
    from nosend_store.config import load_config

    path = tmp_path / "etc" / "mail.cfg"
    status = main(["init", "--config", str(path), "--user", "nobody"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert load_config(path).server.run_as == RunAs(
        "nobody", nobody.uid, nobody.group, nobody.gid, line=nobody_line(path)
    )
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, nobody.gid, 0o640)
    folder = path.parent.stat()  # made by init: the group may enter it
    assert (folder.st_gid, stat.S_IMODE(folder.st_mode)) == (nobody.gid, 0o750)
    assert f"readable by group {nobody.group}" in out
    status = main(["init", "--config", str(tmp_path / "x.cfg"), "--user", "no-such-user-x9"])
    assert status == 1 and "user: no such user 'no-such-user-x9'" in capsys.readouterr().err
    assert not (tmp_path / "x.cfg").exists()


def nobody_line(path: Path) -> int:
    return path.read_text().split("\n").index("user = nobody") + 1
