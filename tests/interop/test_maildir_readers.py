"""Maildirs written by nosend, read by the real programs a site would switch to.

- Dovecot: its POP3 server run stand-alone in pre-authenticated mode (``MAIL`` set, POP3
  commands on stdin) — no daemon, no network. It must list every message with our sizes,
  report our UIDLs with ``pop3_uidl_format = %f``, return the same bytes, and its
  deletions must be seen by us.
- mutt: run on a pseudo-terminal (``script``) with pushed commands that copy every message
  to an mbox; the mbox ``Status:``/``X-Status:`` headers tell which flags mutt saw. A flag
  that mutt sets must show up in our listing under the same key.
"""

from __future__ import annotations

import mailbox
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend_store.maildir import MaildirMailbox
from tests.interop.conftest import run_mutt

pytestmark = pytest.mark.interop

DOVECOT_POP3 = "/usr/lib/dovecot/pop3"

MESSAGES = [
    b"From: a@yacht\r\nSubject: one\r\n\r\nhello\r\n",
    b"From: a@yacht\r\nSubject: two\r\n\r\n.leading dot\r\nthe sea\r\n",
    b"From: a@yacht\nSubject: three\n\nLF only, no final newline",
    b"From: a@yacht\r\nSubject: four\r\n\r\n" + b"long line " * 2000 + b"\r\n",
]


def require_file(path: str) -> str:
    if os.access(path, os.X_OK):
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing; .ci/run must install dovecot-pop3d")
    pytest.skip(f"{path} is missing")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    # Dovecot refuses mail access as root, so under root it runs as "nobody", which must
    # reach the Maildir: pytest's tmp_path (mode 0700 under root) is not reachable.
    d = Path(tempfile.mkdtemp(prefix="nosend-interop-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_dovecot_pop3(maildir: Path, commands: list[str]) -> str:
    pop3 = require_file(DOVECOT_POP3)
    conf = maildir.parent / "dovecot.conf"
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        for root, dirs, files in os.walk(maildir.parent):
            for name in dirs + files:
                os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
        uid, gid, name = user.pw_uid, user.pw_gid, "nobody"
    else:
        uid, gid, name = os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name
    conf.write_text(
        f"base_dir = {maildir.parent}/run\n"
        "log_path = /dev/stderr\n"
        "ssl = no\n"
        "protocols = pop3\n"
        "pop3_uidl_format = %f\n"
        f"mail_location = maildir:{maildir}\n"
        f"mail_uid = {uid}\nmail_gid = {gid}\n"
        "first_valid_uid = 0\nfirst_valid_gid = 0\n"
    )
    result = subprocess.run(
        [pop3, "-c", str(conf)],
        input="".join(c + "\r\n" for c in commands).encode(),
        capture_output=True,
        timeout=15,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(maildir.parent),
            "USER": name,
            "MAIL": f"maildir:{maildir}",
        },
        user=uid if os.geteuid() == 0 else None,
        group=gid if os.geteuid() == 0 else None,
        extra_groups=[] if os.geteuid() == 0 else None,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode("latin-1")


def multiline(transcript: str, command_index: int) -> list[str]:
    """Lines of the n-th multi-line response (+OK line excluded, dot-unstuffed)."""
    blocks = transcript.split("\r\n.\r\n")
    block = blocks[command_index]
    lines = block.split("\r\n")
    # Drop everything up to and including this response's +OK line.
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("+OK"):
            lines = lines[i + 1 :]
            break
    return [line[1:] if line.startswith(".") else line for line in lines]


def test_dovecot_pop3_sees_our_messages_sizes_uidls_and_bytes(shared_dir: Path) -> None:
    maildir = shared_dir / "Maildir"
    mb = MaildirMailbox(maildir)
    for m in MESSAGES:
        mb.deliver([m])
    mb.set_flags(mb.list_messages()[0].key, "RS")
    # A file another agent delivered (no ,W=) makes us write our size cache, and a POP3
    # session leaves our lock file: Dovecot must not mind either in the Maildir root.
    (maildir / "new" / "1700000000.foreign.host").write_bytes(b"Subject: five\r\n\r\nx\r\n")
    mb.pop3_session().close()
    assert {"nosend-wiresizes", "nosend-pop3.lock"} <= set(os.listdir(maildir))
    ours = mb.list_messages()
    assert len(ours) == 5
    transcript = run_dovecot_pop3(
        maildir, ["STAT", "LIST", "UIDL"] + [f"RETR {i}" for i in range(1, 6)] + ["QUIT"]
    )
    first = transcript.split("\r\n", 1)[0]
    assert first == f"+OK {len(ours)} {sum(m.size for m in ours)}", transcript[:300]
    listed = multiline(transcript, 0)
    assert listed == [f"{i} {m.size}" for i, m in enumerate(ours, start=1)]
    uidls = multiline(transcript, 1)
    assert uidls == [f"{i} {m.uidl}" for i, m in enumerate(ours, start=1)]
    for i, m in enumerate(ours, start=1):
        body = "\r\n".join(multiline(transcript, 1 + i)) + "\r\n"
        ours_wire = b"".join(mb.wire_chunks(m.key)).decode("latin-1")
        assert body == ours_wire
        assert len(body.encode("latin-1")) == m.size


def test_dovecot_deletion_is_seen_by_us_and_its_files_do_not_confuse_us(
    shared_dir: Path,
) -> None:
    maildir = shared_dir / "Maildir"
    mb = MaildirMailbox(maildir)
    keys = [mb.deliver([m]) for m in MESSAGES[:3]]
    transcript = run_dovecot_pop3(maildir, ["DELE 2", "QUIT"])
    assert "+OK" in transcript
    # Dovecot left its index and uidlist files in the Maildir root; we ignore them.
    assert any(n.startswith("dovecot") for n in os.listdir(maildir))
    assert [m.key for m in MaildirMailbox(maildir).list_messages()] == [keys[0], keys[2]]
    # And we can still deliver into and open a Maildir that Dovecot has used.
    os.chmod(maildir / "tmp", 0o777)
    os.chmod(maildir / "new", 0o777)
    os.chmod(maildir, 0o777)
    key = mb.deliver([b"Subject: after dovecot\n\nx\n"])
    with mb.open_message(key) as f:
        assert f.read().startswith(b"Subject: after dovecot")


def test_mutt_sees_every_message_with_flags_intact(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    mb = MaildirMailbox(maildir)
    keys = [mb.deliver([m]) for m in MESSAGES]
    mb.set_flags(keys[0], "RS")  # seen + replied
    mb.set_flags(keys[2], "F")  # flagged, unread
    out = tmp_path / "out.mbox"
    run_mutt(maildir, f"<tag-pattern>~A<enter><copy-message>{out}<enter><quit>", tmp_path)
    copied = {m["Subject"]: m for m in mailbox.mbox(str(out))}
    assert set(copied) == {"one", "two", "three", "four"}
    # mbox flags as mutt writes them: R read, O old, A answered, F flagged.
    assert set(copied["one"].get_flags()) == {"R", "O", "A"}
    assert set(copied["three"].get_flags()) == {"O", "F"}
    assert copied["two"].get_flags() == ""  # new: untouched
    assert copied["two"].get_payload() == ".leading dot\nthe sea\n"
    assert copied["four"].get_payload() == "long line " * 2000 + "\n"
    assert copied["three"].get_payload() == "LF only, no final newline\n"
    # Reading with mutt changed nothing on disk.
    assert sorted(m.key for m in mb.list_messages()) == sorted(keys)


def test_flags_set_by_mutt_show_up_under_the_same_key(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    mb = MaildirMailbox(maildir)
    keys = [mb.deliver([m]) for m in MESSAGES[:2]]
    before = {m.key: (m.uidl, m.size) for m in mb.list_messages()}
    # Flag every message as important, then sync and quit.
    run_mutt(maildir, "<tag-pattern>~A<enter><flag-message><sync-mailbox><quit>", tmp_path)
    after = mb.list_messages()
    assert {m.key: (m.uidl, m.size) for m in after} == before
    # mutt keeps unread messages in new/ even with an info part; both places count.
    assert all(m.flags == "F" for m in after), after
    assert sorted(m.key for m in after) == sorted(keys)
