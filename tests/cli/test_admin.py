"""The administrative ``nosend`` commands: exit status, output, secrets, round trips."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nosend.cli import main
from nosend_store.config import load_config
from nosend_store.queue import Envelope, OutboundQueue

HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"  # "password"

ORIGINAL = f"""\
# Yacht mail -- my notes must survive `nosend` edits.

[server]
hostname = mail.yacht.example   # the boat
data_dir = data                 # next to this file

[domains]
yacht.example   # main

# crew mailboxes
[mailbox captain]
password = {HASH}

# who gets what
[aliases]
skipper@yacht.example = captain   # old name
"""


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mail.cfg"
    path.write_text(ORIGINAL)
    os.chmod(path, 0o600)
    monkeypatch.setenv("NOSEND_CONFIG", str(tmp_path / "not-this-one.cfg"))
    return path


class TerminalInput(io.StringIO):
    """Standard input that claims to be a terminal, so the command prompts."""

    def isatty(self) -> bool:
        return True


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    stdin: str | io.StringIO = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin) if isinstance(stdin, str) else stdin)
    capsys.readouterr()
    try:
        status = main(list(argv))
    except SystemExit as e:
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


# -- init -----------------------------------------------------------------------------


def test_init_generates_a_password_shown_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "etc" / "mail.cfg"
    status, out, err = run(
        capsys, monkeypatch, "init", "--config", str(path), "--data-dir", str(tmp_path / "d")
    )
    assert status == 0, err
    m = re.search(r"password for mailbox 'user' \(shown only now\): (\S+)", out)
    assert m is not None
    password = m[1]
    assert password not in path.read_text()
    config = load_config(path)
    assert config.mailboxes["user"].check_password(password)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.server.data_dir == tmp_path / "d"

    before = path.read_text()
    status, out, err = run(capsys, monkeypatch, "init", "--config", str(path))
    assert status == 1 and err == f"nosend: {path} already exists; edit it or remove it first\n"
    assert path.read_text() == before


def test_init_with_password_stdin_prints_no_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mail.cfg"
    argv = ["init", "--config", str(path), "--hostname", "mail.yacht.example"]
    argv += ["--domain", "yacht.example", "--mailbox", "captain", "--password-stdin"]
    argv += ["--data-dir", str(tmp_path / "d")]
    status, out, err = run(capsys, monkeypatch, *argv, stdin="Aye aye 1\n")
    assert status == 0, err
    assert "Aye aye 1" not in out + err and "shown only now" not in out
    config = load_config(path)
    assert config.domains == {"yacht.example"}
    assert config.mailboxes["captain"].check_password("Aye aye 1")


def test_init_rejects_bad_options_without_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mail.cfg"
    status, _, err = run(capsys, monkeypatch, "init", "--config", str(path), "--hostname", "a b")
    assert status == 1 and err.startswith("nosend: bad option: hostname: bad host name")
    assert err.count("\n") == 1 and not path.exists()


# -- passwords ------------------------------------------------------------------------


def test_user_add_from_stdin_never_echoes_the_password(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(
        capsys,
        monkeypatch,
        "user",
        "add",
        "mate",
        "--password-stdin",
        "--config",
        str(cfg),
        stdin="Sea s3cret\n",
    )
    assert (status, out, err) == (0, f"added mailbox mate\nchanged {cfg}\n", "")
    text = cfg.read_text()
    assert "Sea s3cret" not in text
    assert load_config(cfg).mailboxes["mate"].check_password("Sea s3cret")
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_user_add_prompts_twice_on_a_terminal(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["tty pw", "tty pw"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    status, out, err = run(
        capsys, monkeypatch, "user", "add", "mate", "--config", str(cfg), stdin=TerminalInput()
    )
    assert status == 0, err
    assert prompts == ["Password: ", "Password (again): "]
    assert "tty pw" not in out + err
    assert load_config(cfg).mailboxes["mate"].check_password("tty pw")


def test_user_add_prompt_mismatch(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    status, _, err = run(
        capsys, monkeypatch, "user", "add", "mate", "--config", str(cfg), stdin=TerminalInput()
    )
    assert (status, err) == (1, "nosend: the two passwords differ\n")
    assert cfg.read_text() == ORIGINAL


def test_user_add_without_terminal_or_stdin_flag(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(capsys, monkeypatch, "user", "add", "mate", "--config", str(cfg))
    assert status == 1
    assert err == "nosend: no terminal to ask for the password on; use --password-stdin\n"


def test_empty_password_is_refused(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(
        capsys,
        monkeypatch,
        "user",
        "add",
        "mate",
        "--password-stdin",
        "--config",
        str(cfg),
        stdin="\n",
    )
    assert (status, err) == (1, "nosend: empty password\n")


def test_password_on_the_command_line_is_a_usage_error(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(
        capsys, monkeypatch, "user", "add", "mate", "--password", "x", "--config", str(cfg)
    )
    assert status == 2 and "unrecognized arguments" in err
    assert cfg.read_text() == ORIGINAL


def test_bad_or_taken_name_is_reported_before_reading_a_password(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, message in (
        ("Captain", "bad mailbox name 'Captain'"),
        ("captain", "mailbox 'captain' already exists"),
    ):
        stdin = io.StringIO("unread\n")
        monkeypatch.setattr(sys, "stdin", stdin)
        capsys.readouterr()
        status = main(["user", "add", name, "--password-stdin", "--config", str(cfg)])
        err = capsys.readouterr().err
        assert status == 1 and message in err and err.count("\n") == 1
        assert stdin.tell() == 0  # the password was never read
    assert cfg.read_text() == ORIGINAL


def test_shared_secret_opt_in_warns_and_follows_password_changes(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ["--config", str(cfg)]
    status, _, err = run(
        capsys,
        monkeypatch,
        "user",
        "add",
        "cook",
        "--shared-secret",
        "--password-stdin",
        *c,
        stdin="apop1\n",
    )
    assert status == 0 and "plaintext-equivalent" in err and "apop1" not in err
    assert "# WARNING: shared_secret is plaintext-equivalent" in cfg.read_text()
    assert load_config(cfg).mailboxes["cook"].shared_secret == "apop1"

    # A new password replaces the shared secret too, or APOP would take the old one.
    status, _, err = run(
        capsys, monkeypatch, "user", "passwd", "cook", "--password-stdin", *c, stdin="apop2\n"
    )
    assert status == 0 and "plaintext-equivalent" in err
    cook = load_config(cfg).mailboxes["cook"]
    assert cook.shared_secret == "apop2" and cook.check_password("apop2")

    status, _, err = run(
        capsys,
        monkeypatch,
        "user",
        "passwd",
        "cook",
        "--no-shared-secret",
        "--password-stdin",
        *c,
        stdin="apop3\n",
    )
    assert (status, err) == (0, "")
    assert load_config(cfg).mailboxes["cook"].shared_secret is None
    assert "WARNING" not in cfg.read_text()

    status, out, _ = run(capsys, monkeypatch, "config", "check", *c)
    assert status == 0


def test_user_passwd_unknown_user(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(
        capsys,
        monkeypatch,
        "user",
        "passwd",
        "ghost",
        "--password-stdin",
        "--config",
        str(cfg),
        stdin="x\n",
    )
    assert (status, err) == (1, "nosend: no mailbox 'ghost'\n")


def test_user_passwd_with_pbkdf2_scheme(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, _ = run(
        capsys,
        monkeypatch,
        "user",
        "passwd",
        "captain",
        "--scheme",
        "PBKDF2",
        "--password-stdin",
        "--config",
        str(cfg),
        stdin="new one\n",
    )
    assert status == 0
    captain = load_config(cfg).mailboxes["captain"]
    assert captain.password_hash.startswith("{PBKDF2}$1$") and captain.check_password("new one")
    assert "# crew mailboxes\n[mailbox captain]\npassword = {PBKDF2}" in cfg.read_text()


# -- round trip -----------------------------------------------------------------------


def test_cli_edits_and_their_reverse_give_back_the_file(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ["--config", str(cfg)]
    steps = [
        (["domain", "add", "yacht.example.net"], ""),
        (["user", "add", "mate", "--password-stdin"], "pw\n"),
        (["user", "add", "cook", "--password-stdin", "--shared-secret"], "pw\n"),
        (["alias", "add", "crew@yacht.example", "captain", "mate", "friend@example.net"], ""),
        (["alias", "add", "skipper@yacht.example", "mate"], ""),
        (["alias", "add", "@yacht.example.net", "cook"], ""),
    ]
    for argv, stdin in steps:
        status, _, err = run(capsys, monkeypatch, *argv, *c, stdin=stdin)
        assert status == 0, (argv, err)
        # Every comment line of the original is still there, unchanged and in order.
        now = cfg.read_text().splitlines()
        comments = [line for line in ORIGINAL.splitlines() if line.startswith("#")]
        assert [line for line in now if line in comments] == comments
        assert sum("#" in line for line in now) >= sum("#" in line for line in ORIGINAL.split("\n"))

    config = load_config(cfg)
    assert config.resolve("crew@yacht.example").mailboxes == ("captain", "mate")  # type: ignore[union-attr]
    assert config.resolve("skipper@yacht.example").mailboxes == ("captain", "mate")  # type: ignore[union-attr]
    assert config.resolve("x@yacht.example.net").mailboxes == ("cook",)  # type: ignore[union-attr]
    assert "skipper@yacht.example = captain, mate   # old name" in cfg.read_text()

    undo = [
        ["alias", "remove", "@yacht.example.net"],
        ["alias", "remove", "skipper@yacht.example", "mate"],
        ["alias", "remove", "crew@yacht.example"],
        ["user", "remove", "cook"],
        ["user", "remove", "mate"],
        ["domain", "remove", "yacht.example.net"],
    ]
    for argv in undo:
        status, _, err = run(capsys, monkeypatch, *argv, *c)
        assert status == 0, (argv, err)
    assert cfg.read_text() == ORIGINAL


def test_lists(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ["--config", str(cfg)]
    run(capsys, monkeypatch, "domain", "add", "b.example", *c)
    run(capsys, monkeypatch, "alias", "add", "crew@b.example", "captain", "x@y.org", *c)
    assert run(capsys, monkeypatch, "domain", "list", *c) == (0, "b.example\nyacht.example\n", "")
    assert run(capsys, monkeypatch, "user", "list", *c) == (0, "captain  PBKDF2  postmaster\n", "")
    assert run(capsys, monkeypatch, "alias", "list", *c) == (
        0,
        "skipper@yacht.example = captain\ncrew@b.example = captain, x@y.org\n",
        "",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["domain", "add", "yacht.example"], "nosend: domain 'yacht.example' is already listed\n"),
        (["domain", "add", "bad domain"], "bad host name 'bad domain'"),
        (["domain", "remove", "yacht.example"], "still has aliases (skipper@yacht.example)"),
        (["domain", "remove", "nope.example"], "nosend: no domain 'nope.example' in [domains]\n"),
        (["user", "remove", "captain"], "target of alias skipper@yacht.example"),
        (["user", "remove", "ghost"], "nosend: no mailbox 'ghost'\n"),
        (["alias", "add", "x@yacht.example", "ghost"], "no mailbox named 'ghost'"),
        (["alias", "add", "x@other.example", "captain"], "is not in [domains]"),
        (["alias", "add", "a@yacht.example", "b@yacht.example"], "unknown local address"),
        (["alias", "remove", "x@yacht.example"], "nosend: no alias 'x@yacht.example'\n"),
        (["alias", "remove", "skipper@yacht.example", "mate"], "has no target 'mate'"),
    ],
)
def test_user_errors_exit_1_with_one_line(
    cfg: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    status, out, err = run(capsys, monkeypatch, *argv, "--config", str(cfg))
    assert status == 1 and out == ""
    assert err.startswith("nosend: ") and err.count("\n") == 1 and message in err
    assert cfg.read_text() == ORIGINAL


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["user"],
        ["user", "frobnicate"],
        ["domain", "add"],
        ["alias", "add", "x@y.org"],
        ["init", "--scheme", "MD5"],
        ["queue", "show"],
    ],
)
def test_usage_errors_exit_2(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    status, _, err = run(capsys, monkeypatch, *argv)
    assert status == 2 and "usage:" in err


@pytest.mark.parametrize("group", ["init", "domain", "user", "alias", "queue", "config"])
def test_help_has_examples(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, group: str
) -> None:
    status, out, _ = run(capsys, monkeypatch, group, "--help")
    assert status == 0 and "examples:" in out and f"nosend {group}" in out


# -- config ---------------------------------------------------------------------------


def test_config_check_ok_and_warnings(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 0 and err == ""
    assert out == f"{cfg}: OK (1 domain, 1 mailbox, 1 alias, 0 links, 0 accounts)\n"
    os.chmod(cfg, 0o644)
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 0 and "chmod 600" in err


def test_config_check_lets_the_service_group_read_mail_cfg(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pwd

    me = pwd.getpwuid(os.geteuid())
    cfg.write_text(ORIGINAL.replace("data_dir =", f"user = {me.pw_name}\ndata_dir ="))
    os.chown(cfg, -1, me.pw_gid)
    os.chmod(cfg, 0o640)  # root:nosend 0640: the server reads it again at reload
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 0 and err == "", err
    os.chmod(cfg, 0o660)  # but the group may not write it
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 0 and f"chgrp {me.pw_gid} and chmod 640 it" in err


def test_config_check_lists_every_error_with_file_and_line(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg.write_text(
        ORIGINAL.replace("data_dir =", "max_recipients = lots\ndata_dir =")
        .replace("[domains]", "[domains]\nbad domain!")
        .replace("= captain   #", "= ghost   #")
    )
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 1 and out == ""
    assert err.splitlines() == [
        f"nosend: {cfg}:5: max_recipients: bad number 'lots'",
        f"nosend: {cfg}:9: bad host name 'bad domain!'",
        f"nosend: {cfg}:18: alias 'skipper@yacht.example': no mailbox named 'ghost'",
    ]
    # Without a usable [server] the cross-checks cannot run, but the file is still named.
    cfg.write_text(ORIGINAL.replace("hostname =", "hostnme ="))
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 1 and err.splitlines() == [
        f"nosend: {cfg}:3: missing required key 'hostname' in [server]",
        f"nosend: {cfg}:4: unknown key 'hostnme' in [server]",
    ]


def test_edits_refuse_a_broken_file(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg.write_text(ORIGINAL + "[bogus]\n")
    status, _, err = run(capsys, monkeypatch, "domain", "add", "x.example", "--config", str(cfg))
    assert status == 1 and err.startswith(f"nosend: {cfg}:17: unknown section [bogus]")
    assert cfg.read_text() == ORIGINAL + "[bogus]\n"


def test_missing_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "none.cfg"
    status, _, err = run(capsys, monkeypatch, "domain", "list", "--config", str(path))
    assert (status, err) == (1, f"nosend: {path}: no such file\n")


def test_nosend_config_environment_variable(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOSEND_CONFIG", str(cfg))
    assert run(capsys, monkeypatch, "config", "path") == (0, f"{cfg}\n", "")
    assert run(capsys, monkeypatch, "domain", "list") == (0, "yacht.example\n", "")
    other = cfg.parent / "other.cfg"
    assert run(capsys, monkeypatch, "config", "path", "--config", str(other)) == (
        0,
        f"{other}\n",
        "",
    )


# -- queue ----------------------------------------------------------------------------


def test_queue_commands(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ["--config", str(cfg)]
    assert run(capsys, monkeypatch, "queue", "list", *c) == (0, "the queue is empty\n", "")
    assert not (cfg.parent / "data").exists()  # listing does not create the queue

    queue = OutboundQueue(load_config(cfg).server.queue_dir)
    message = b"From: captain@yacht.example\r\nSubject: Position\r\n report\r\n\r\nAt sea.\r\n"
    qid = queue.enqueue(
        Envelope.simple("captain@yacht.example", ["a@example.net", "b@example.net"]), [message]
    )

    status, out, _ = run(capsys, monkeypatch, "queue", "list", *c)
    assert status == 0 and qid in out and "2/2 recipients pending" in out
    assert out.endswith("1 message\n")

    status, out, _ = run(capsys, monkeypatch, "queue", "show", qid, *c)
    assert status == 0
    assert "sender:       <captain@yacht.example>" in out
    assert "recipient:    <b@example.net>  pending" in out
    assert "Subject: Position report" in out  # folded header shown unfolded

    # Make the entry look like it is waiting for a retry, then retry it now.
    with queue.claim(qid) as claim:  # type: ignore[union-attr]
        from nosend_store.queue import RecipientResult

        claim.record("a@example.net", RecipientResult.deferred("421 try later"))
        claim.finish()
    assert queue.due() == []
    status, out, _ = run(capsys, monkeypatch, "queue", "retry", *c)
    assert (status, out) == (0, "1 message will be retried at the next chance\n")
    assert [e.id for e in queue.due()] == [qid]
    assert queue.get(qid).attempts == 1  # type: ignore[union-attr]

    # A message being sent cannot be deleted under the sender's feet.
    held = queue.claim(qid)
    assert held is not None
    status, _, err = run(capsys, monkeypatch, "queue", "delete", qid, *c)
    assert status == 1 and "being sent right now" in err
    held.release()

    assert run(capsys, monkeypatch, "queue", "delete", qid, *c) == (0, f"deleted {qid}\n", "")
    assert queue.ids() == []
    for argv in (["show", qid], ["delete", qid], ["retry", qid], ["show", "../../etc"]):
        status, _, err = run(capsys, monkeypatch, "queue", *argv, *c)
        assert status == 1 and "no message" in err


# -- the real program -----------------------------------------------------------------


def test_installed_command_exit_codes_and_secrecy(cfg: Path) -> None:
    env = {**os.environ, "NOSEND_CONFIG": str(cfg)}
    cmd = [sys.executable, "-m", "nosend"]
    added = subprocess.run(
        [*cmd, "user", "add", "mate", "--password-stdin"],
        input="Very secret 9\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
    )
    assert added.returncode == 0, added.stderr
    assert "Very secret 9" not in added.stdout + added.stderr
    assert load_config(cfg).mailboxes["mate"].check_password("Very secret 9")
    usage = subprocess.run([*cmd, "user"], capture_output=True, text=True, env=env, timeout=20)
    assert usage.returncode == 2
    error = subprocess.run(
        [*cmd, "user", "remove", "ghost"], capture_output=True, text=True, env=env, timeout=20
    )
    assert (error.returncode, error.stderr) == (1, "nosend: no mailbox 'ghost'\n")
