"""``nosend check`` started as root with ``user =`` set: the link's ``up`` and ``down``
run as root, what the exchange writes belongs to the service user, and so does
``state/`` (lock, ledger) afterwards. Needs root (see tests/cli/test_service_user.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend.privileges import give_tree
from nosend_store.config import RunAs
from tests.cli.test_check import Boat, make_shore
from tests.cli.test_service_user import account  # noqa: F401 -- fixture

pytestmark = pytest.mark.interop

@pytest.fixture
def place() -> Iterator[Path]:
    """A folder the account can enter (pytest's tmp_path is inside a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="nosend-check-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_root_dials_and_the_service_user_owns_the_mail(
    place: Path, account: pwd.struct_passwd  # noqa: F811 -- the fixture
) -> None:
    shore = make_shore(place / "shore")
    root = place / "boat"
    root.mkdir()
    boat = Boat(root, shore, "")
    boat.links = boat.shore_link()
    boat.write()
    text = boat.config.read_text().replace(
        "[server]\n", f"[server]\nuser = {account.pw_name}\n", 1)
    boat.config.write_text(text)
    # up and down note the user they run as, then do what they do.
    for name, log_arg in (("up.py", 3), ("down.py", 2)):
        path = root / name
        note = ("import os, sys\nopen(sys.argv[" + str(log_arg) + "], 'a').write("
                "f'{sys.argv[0]} uid {os.geteuid()}\\n')\n")
        path.write_text(note + path.read_text())
    boat.enqueue(1)
    shore.deliver("alice", b"From: a@nosend.test\nSubject: in\n\nhello\n")
    # The queue as the server (running as the account) would have written it.
    give_tree(boat.data, RunAs(account.pw_name, account.pw_uid, account.pw_name,
                               account.pw_gid))
    done = boat.check()
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = boat.log.read_text().splitlines()
    assert f"{root / 'up.py'} uid 0" in lines and f"{root / 'down.py'} uid 0" in lines
    (fetched,) = list((boat.data / "mail" / "mate" / "new").iterdir())
    assert fetched.stat().st_uid == account.pw_uid
    for path in (boat.data / "state").iterdir():
        assert path.stat().st_uid == account.pw_uid, path
    assert boat.queued() == []
