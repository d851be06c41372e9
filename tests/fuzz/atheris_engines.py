"""Coverage-guided fuzzing of the SMTP and POP3 engines, both roles (atheris, libFuzzer).

Owns: one fuzz target per engine, ``smtp_one_input`` and ``pop3_one_input`` (the server
engines, fed client bytes) and ``smtp_client_one_input`` and ``pop3_client_one_input``
(the client engines, fed server bytes; see the section at the end), each taking any
bytes. Must not: need atheris to be imported (the targets are plain functions, so
``tests/fuzz/test_atheris_targets.py`` replays the seeds and every past finding in the
ordinary test run), or touch anything but the engines and the in-memory test session.

An input is read as: a few bytes choosing the configuration and the application's answers
(accept or refuse each policy event), a few bytes choosing where the client's bytes are
cut into chunks, then the client's bytes. Each target checks, whatever the input:

* nothing raises (the application here always answers as the API allows);
* after the peer's EOF the connection is closed; every line the server wrote is a reply
  line (SMTP ``ddd`` + space or hyphen; POP3 ``+OK``/``-ERR`` + space for status lines);
* the buffers stay within the configured limits, and an SMTP body never hands on more
  than ``max_message_size`` octets (SMTP);
* the same bytes cut into other chunks give the same events and the same reply bytes
  (DATA chunks joined, since their boundaries follow the input's; body bytes that no end
  of body completed are left out, see ``_completed_bodies_only``), in sessions without
  STARTTLS/STLS (bytes read together with those are dropped on purpose). The SMTP client
  target likewise compares the server's bytes whole and in the input's chunks (events,
  any ``RemoteProtocolError``, the bytes written between events), up to a 220 to
  STARTTLS; the POP3 client target does not (``test_pop3_client_fuzz.py`` does).

Run (``pip install -e '.[fuzz]'`` or ``pip install atheris``), from the repository root::

    PYTHONPATH=src python tests/fuzz/atheris_engines.py smtp -max_total_time=300 \
        -max_len=4096 .fuzz-corpus/smtp
    PYTHONPATH=src python tests/fuzz/atheris_engines.py pop3 -max_total_time=300 \
        -max_len=4096 .fuzz-corpus/pop3
    PYTHONPATH=src python tests/fuzz/atheris_engines.py smtp-client -max_total_time=300 \
        -max_len=4096 .fuzz-corpus/smtp-client
    PYTHONPATH=src python tests/fuzz/atheris_engines.py pop3-client -max_total_time=300 \
        -max_len=4096 .fuzz-corpus/pop3-client

Arguments after the engine name are libFuzzer's; a corpus folder is grown in place, and a
failing input is written to ``crash-<sha1>`` (``-artifact_prefix=`` chooses where).
Replay one with ``python tests/fuzz/atheris_engines.py smtp crash-...``. Every finding
goes into ``REGRESSIONS`` in ``test_atheris_targets.py``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# The engines are imported lazily (``_engines``) so that atheris can instrument them:
# only modules imported inside ``atheris.instrument_imports()`` report coverage.
_LOADED: dict[str, object] = {}

T = TypeVar("T")
SMTP_REPLY_LINE = re.compile(rb"\A[2-5]\d\d[ -][^\r\n]*\Z")


class Tape:
    """Reads an input from the front: small choices, then the rest as the payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        """The next byte (0 once the input is used up)."""
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def choose(self, options: tuple[T, ...]) -> T:
        return options[self.byte() % len(options)]

    def rest(self) -> bytes:
        return self.data[self.pos :]


class Answers:
    """The application's decisions: bit ``i`` of the cycled ``bits`` says whether the i-th
    policy event is refused. The same tape gives the same decisions on every replay."""

    def __init__(self, bits: bytes) -> None:
        self.bits = bits or b"\0"
        self.n = 0

    def refuse(self) -> bool:
        i = self.n
        self.n += 1
        return bool(self.bits[(i // 8) % len(self.bits)] >> (i % 8) & 1)


def cut(payload: bytes, sizes: bytes) -> list[bytes]:
    """``payload`` in chunks whose lengths cycle through ``sizes`` (1..256 each)."""
    if not sizes:
        return [payload] if payload else []
    chunks, pos, i = [], 0, 0
    while pos < len(payload):
        n = sizes[i % len(sizes)] + 1
        chunks.append(payload[pos : pos + n])
        pos += n
        i += 1
    return chunks


def _tls_started(events: list[object]) -> bool:
    """Whether a StartTLS event came (the harness may have accepted it). Bytes that came
    in the same read as STARTTLS/STLS are dropped on purpose (RFC 3207 section 4.2,
    RFC 2595 section 4: no command injection), so from there on the events depend on the
    chunking: the split-independence check applies only to sessions without it."""
    return any(type(event).__name__ == "StartTLS" for event in events)


# -- SMTP -------------------------------------------------------------------------------


def _smtp_config(tape: Tape) -> object:
    from nosend_proto.smtp_state import SMTPServerConfig  # noqa: PLC0415

    flags = tape.byte()
    return SMTPServerConfig(
        hostname="mx.fuzz.example",
        max_message_size=tape.choose((0, 10, 100, 3000)),
        max_text_line=tape.choose((0, 3, 80, 1000)),
        max_recipients=tape.choose((1, 2, 100)),
        max_errors=tape.choose((0, 1, 5, 50)),
        tls_available=bool(flags & 1),
        tls_active=bool(flags & 2),
        auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5") if flags & 4 else (),
        auth_requires_tls=bool(flags & 8),
        bare_newlines="normalise" if flags & 16 else "reject",
        pipelining=not flags & 32,
        chunking=not flags & 64,
        smtputf8=not flags & 128,
    )


def _smtp_run(config: object, chunks: list[bytes], bits: bytes) -> tuple[list[object], bytes]:
    """Feed ``chunks`` then EOF; answer every event; check the bounds; return the events
    (DATA chunks joined) and every byte the server wrote."""
    from nosend_proto import smtp_events as ev  # noqa: PLC0415
    from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState  # noqa: PLC0415

    assert isinstance(config, SMTPServerConfig)
    answers = Answers(bits)
    conn = ServerConnection(config, nonce="fuzz")
    out = [conn.send(ev.Reply(220, "mx.fuzz.example ESMTP"))]
    events: list[object] = []
    pending = [*chunks, b""]
    max_chunk = max((len(c) for c in chunks), default=0)
    content = 0
    refusable = (
        ev.Hello, ev.MailFrom, ev.RcptTo, ev.DataStart, ev.EndOfData, ev.BdatChunkEnd,
        ev.StartTLS, ev.AuthAttempt, ev.Verify, ev.Noop, ev.Reset, ev.Help,
    )  # fmt: skip
    while conn.state is not SMTPState.CLOSED:
        if conn.state is SMTPState.TLS_PENDING:
            conn.start_tls_done()
        event = conn.next_event()
        if event is ev.NEED_DATA:
            if not pending:
                raise AssertionError("NEED_DATA after EOF: the engine did not close")
            conn.receive_data(pending.pop(0))
            continue
        if isinstance(event, ev.DataChunk):
            content += len(event.data)
            if config.max_message_size:
                assert content <= config.max_message_size, (content, config.max_message_size)
            if events and isinstance(events[-1], bytes):
                events[-1] += event.data
            else:
                events.append(event.data)
            continue
        if not isinstance(event, ev.Bdat | ev.BdatChunkEnd):
            content = 0
        events.append(event)
        if isinstance(event, ev.Bdat | ev.ConnectionClosed):
            continue
        if isinstance(event, ev.AuthAttempt):
            reply = ev.Reply(535, "no") if answers.refuse() else conn.default_reply(event)
        elif isinstance(event, refusable) and answers.refuse():
            reply = ev.Reply(550 if not isinstance(event, ev.StartTLS) else 454, "refused")
        else:
            reply = conn.default_reply(event)
        out.append(conn.send(reply))
        # Memory per connection stays bounded whatever the peer sends: at most a line
        # and what two reads bring (the engine's private buffer, as in test_smtp_fuzz).
        assert len(conn._buf) <= conn._buf.max_line + 2 * max_chunk
    wire = b"".join(out)
    assert wire.endswith(b"\r\n"), wire[-80:]
    for line in wire[:-2].split(b"\r\n"):
        assert SMTP_REPLY_LINE.match(line), line
    return _completed_bodies_only(events), wire


def _completed_bodies_only(events: list[object]) -> list[object]:
    """``events`` without the body bytes that no EndOfData or BdatChunkEnd completed.

    The engine hands a body on as it arrives and can only tell it is over the size limit
    (or cut off by the peer) once the excess has come: how much was handed on before then
    depends on the chunking, by design (the application discards it on DataRejected or
    ConnectionClosed). A completed body must be the same however it was cut.
    """
    from nosend_proto.smtp_events import BdatChunkEnd, EndOfData  # noqa: PLC0415

    kept: list[object] = []
    for i, event in enumerate(events):
        if isinstance(event, bytes):
            following = events[i + 1] if i + 1 < len(events) else None
            if not isinstance(following, EndOfData | BdatChunkEnd):
                continue
        kept.append(event)
    return kept


def smtp_one_input(data: bytes) -> None:
    """The SMTP fuzz target: see the module docstring."""
    smtp_transcript(data)


def smtp_transcript(data: bytes) -> bytes:
    """Run the SMTP target's checks on ``data``; return what the server wrote (whole)."""
    from nosend_proto import LocalProtocolError  # noqa: PLC0415

    tape = Tape(data)
    try:
        config = _smtp_config(tape)
    except LocalProtocolError:
        return b""  # a configuration the engine refuses up front: not a peer's doing
    bits = bytes(tape.byte() for _ in range(2))
    sizes = bytes(tape.byte() for _ in range(tape.byte() % 4))
    payload = tape.rest()
    whole_events, whole_wire = _smtp_run(config, [payload] if payload else [], bits)
    cut_events, cut_wire = _smtp_run(config, cut(payload, sizes), bits)
    if not _tls_started(whole_events) and not _tls_started(cut_events):
        assert cut_events == whole_events, (whole_events, cut_events)
        assert cut_wire == whole_wire, (whole_wire, cut_wire)
    return whole_wire


# -- POP3 -------------------------------------------------------------------------------


def _pop3_session(tape: Tape) -> Callable[[], object]:
    from nosend_proto.pop3_events import POP3ServerConfig  # noqa: PLC0415
    from tests.proto.test_pop3_support import Session, logged_in  # noqa: PLC0415

    flags = tape.byte()
    knobs = tape.byte()
    config = POP3ServerConfig(
        hostname="mail.example",
        auth_requires_tls=bool(flags & 1),
        tls_available=bool(flags & 2),
        tls_active=bool(flags & 4),
        user_allowed=not flags & 8,
        apop_enabled=not flags & 16,
        max_errors=tape.choose((0, 1, 3, 1000)),
        max_auth_failures=tape.choose((0, 1, 3, 1000)),
        max_output_buffer=tape.choose((1, 100, 65536)),
    )
    options: dict[str, object] = {
        "chunk_size": 1 + knobs % 16,
        "fail_update": bool(flags & 32),
        "unavailable": {2} if flags & 64 else set(),
        "reject_code": None if knobs & 128 else "AUTH",
    }

    def fresh() -> object:
        if flags & 128 and not config.auth_requires_tls and config.user_allowed:
            return logged_in(cfg=config, **options)
        return Session.start(config, **options)

    return fresh


def _pop3_run(fresh: Callable[[], object], chunks: list[bytes]) -> tuple[list[object], bytes]:
    from nosend_proto.pop3_events import ConnectionClosed, TooManyErrors  # noqa: PLC0415
    from nosend_proto.pop3_state import POP3State  # noqa: PLC0415
    from tests.proto.test_pop3_support import Session  # noqa: PLC0415

    session = fresh()
    assert isinstance(session, Session)
    out = [session.greeting]
    for chunk in chunks:
        if session.final is not None:
            break
        out.append(session.feed(chunk))
    if session.final is None:
        out.append(session.close())
    assert isinstance(session.final, ConnectionClosed | TooManyErrors), session.final
    assert session.conn.state is POP3State.CLOSED
    wire = b"".join(out)
    assert not wire or wire.endswith(b"\r\n"), wire[-80:]
    # RFC 1957: a space always follows the status indicator (the test messages hold no
    # line starting with +OK or -ERR, so every such line is a status line).
    for line in wire.split(b"\r\n"):
        if line.startswith((b"+OK", b"-ERR")):
            assert line.startswith((b"+OK ", b"-ERR ")), line
    return session.events, wire


def pop3_one_input(data: bytes) -> None:
    """The POP3 fuzz target: see the module docstring."""
    pop3_transcript(data)


def pop3_transcript(data: bytes) -> bytes:
    """Run the POP3 target's checks on ``data``; return what the server wrote (whole)."""
    from nosend_proto import LocalProtocolError  # noqa: PLC0415

    tape = Tape(data)
    try:
        fresh = _pop3_session(tape)
    except LocalProtocolError:
        return b""
    sizes = bytes(tape.byte() for _ in range(tape.byte() % 4))
    payload = tape.rest()
    whole_events, whole_wire = _pop3_run(fresh, [payload])
    cut_events, cut_wire = _pop3_run(fresh, cut(payload, sizes))
    if not _tls_started(whole_events) and not _tls_started(cut_events):
        assert cut_events == whole_events, (whole_events, cut_events)
        assert cut_wire == whole_wire, (whole_wire, cut_wire)
    return whole_wire


# -- the client engines ------------------------------------------------------------------
#
# An input is: one byte of configuration flags, three chunk sizes, then the SERVER's
# bytes. A well-behaved application answers every event as the API allows (it logs in
# when offered, sends one transaction or one batch of commands, then QUIT). Whatever the
# input: only RemoteProtocolError escapes, the reply/line buffer stays bounded between
# reads, and once the server's EOF is read the connection is closed. The SMTP client
# target also runs the server's bytes whole: the events, any RemoteProtocolError and the
# bytes written between events must be the same as in the input's chunks.


def _client_tape(data: bytes) -> tuple[int, list[bytes]]:
    """A client target's input: the flags byte, and the server's bytes in chunks."""
    tape = Tape(data)
    flags = tape.byte()
    sizes = bytes(tape.byte() for _ in range(3))
    return flags, cut(tape.rest(), sizes)


def _smtp_client_run(flags: int, chunks: list[bytes]) -> list[object]:
    """Feed ``chunks`` then EOF; answer every event; check the bounds; return the trace:
    the events by value, the bytes the client wrote between them (joined), and at the end
    ``(type name, message)`` if a ``RemoteProtocolError`` was raised."""
    from nosend_proto import RemoteProtocolError  # noqa: PLC0415
    from nosend_proto.smtp_client import ClientConnection, ClientState  # noqa: PLC0415
    from nosend_proto.smtp_client_events import (  # noqa: PLC0415
        NEED_DATA,
        Authenticate,
        BodyChunk,
        ConnectionClosed,
        EndOfBody,
        Quit,
        Ready,
        Recipient,
        SendBody,
        SMTPClientConfig,
        TLSHandshakeNeeded,
        Transaction,
    )

    config = SMTPClientConfig(
        local_hostname="boat.example", pipelining=bool(flags & 1), chunking=bool(flags & 2),
        starttls=bool(flags & 4), require_tls=bool(flags & 8), auth_requires_tls=False,
        bdat_chunk_size=7)
    conn = ClientConnection(config)
    bound = config.max_reply_line * config.max_reply_lines + 12288  # a reply, or a SASL line
    body = b"Subject: x\r\n\r\n.dot\rbare\nline\r\n"
    sent = tried_auth = False
    trace: list[object] = []

    def write(data: bytes) -> None:
        if data and trace and isinstance(trace[-1], bytes):
            trace[-1] += data
        elif data:
            trace.append(data)

    try:
        for piece in [*chunks, b""]:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                write(conn.data_to_send())  # what reaching this event wrote, or a flush
                if event is NEED_DATA:
                    assert conn._reader.pending() <= bound + len(piece)
                    break
                trace.append(event)
                if isinstance(event, ConnectionClosed):
                    assert conn.state is ClientState.CLOSED
                    return trace
                if isinstance(event, TLSHandshakeNeeded):
                    conn.start_tls_done()
                elif isinstance(event, Ready) and "AUTH" in event.extensions.keywords:
                    if not tried_auth:
                        tried_auth = True
                        write(conn.send(Authenticate("u", "secret", ("PLAIN", "LOGIN",
                                                                      "CRAM-MD5"))))
                elif isinstance(event, SendBody):
                    write(conn.send(BodyChunk(body)))
                    write(conn.send(EndOfBody()))
                if conn.state is ClientState.READY and conn.replies_owed == 0:
                    if not sent:
                        sent = True
                        write(conn.send(Transaction("a@b.example", (Recipient("c@d.example"),),
                                                    size=len(body))))
                    else:
                        write(conn.send(Quit()))
                write(conn.data_to_send())
        raise AssertionError("EOF did not close the connection")
    except RemoteProtocolError as err:
        write(conn.data_to_send())
        return [*trace, (type(err).__name__, str(err))]


def _before_tls(trace: list[object]) -> list[object]:
    """``trace`` up to the 220 to STARTTLS: bytes read together with it are refused on
    purpose (RFC 3207 section 4, CVE-2011-0411), so from there on the outcome depends on
    the chunking by design."""
    for i, item in enumerate(trace):
        if type(item).__name__ == "TLSHandshakeNeeded" or (
            isinstance(item, tuple) and item[1].startswith("data after the 220 reply to STARTTLS")
        ):
            return [*trace[:i], "220 to STARTTLS"]
    return trace


def smtp_client_one_input(data: bytes) -> None:
    """Fuzz target: the SMTP client engine against any server bytes."""
    smtp_client_events(data)


def smtp_client_events(data: bytes) -> list[str]:
    """Run ``smtp_client_one_input``'s checks on ``data``; the names of the events it saw
    with the input's chunks (and "RemoteProtocolError" last if one was raised).

    The server's bytes are run twice, whole and in the input's chunks: the traces must be
    equal (up to a 220 to STARTTLS, see ``_before_tls``)."""
    flags, chunks = _client_tape(data)
    payload = b"".join(chunks)
    whole = _before_tls(_smtp_client_run(flags, [payload] if payload else []))
    trace = _smtp_client_run(flags, chunks)
    assert _before_tls(trace) == whole, (whole, trace)
    return [item[0] if isinstance(item, tuple) else type(item).__name__
            for item in trace if not isinstance(item, bytes)]


def _pop3_client_run(flags: int, chunks: list[bytes]) -> list[str]:
    from nosend_proto import RemoteProtocolError  # noqa: PLC0415
    from nosend_proto.pop3_client import ClientConnection  # noqa: PLC0415
    from nosend_proto.pop3_client_events import (  # noqa: PLC0415
        NEED_DATA,
        Apop,
        Auth,
        Capa,
        CapabilitiesReceived,
        ConnectionClosed,
        Dele,
        Greeting,
        List,
        LoggedIn,
        LoginFailed,
        POP3ClientConfig,
        Quit,
        Retr,
        Stat,
        Top,
        Uidl,
        UserPass,
    )

    config = POP3ClientConfig(max_listing_entries=5, max_capabilities=5, max_sasl_steps=3)
    limit = max(config.max_line, config.max_sasl_line)
    conn = ClientConnection(config)
    logins = (UserPass("u", "p"), Apop("u", "p"), Auth("PLAIN", "u", "p"),
              Auth("CRAM-MD5", "u", "p"))
    seen: list[str] = []
    try:
        for piece in [*chunks, b""]:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    assert conn.buffered < limit + len(piece)
                    break
                seen.append(type(event).__name__)
                if isinstance(event, ConnectionClosed):
                    return seen
                if isinstance(event, Greeting):
                    conn.send(Capa())
                elif isinstance(event, CapabilitiesReceived) and conn.outstanding == 0:
                    login = logins[flags % len(logins)]
                    if isinstance(login, Apop) and conn.timestamp is None:
                        login = UserPass("u", "p")
                    conn.send(login)
                elif isinstance(event, LoginFailed) and conn.outstanding == 0:
                    conn.send(Quit())
                elif isinstance(event, LoggedIn):
                    batch = [Stat(), Uidl(), List(), Retr(1), Top(2, 1), Dele(1), Quit()]
                    if conn.pipelining:
                        for command in batch:
                            conn.send(command)
                    else:
                        conn.send(Quit())
                conn.data_to_send()
        raise AssertionError("EOF did not close the connection")
    except RemoteProtocolError:
        return [*seen, "RemoteProtocolError"]


def pop3_client_one_input(data: bytes) -> None:
    """Fuzz target: the POP3 client engine against any server bytes."""
    pop3_client_events(data)


def pop3_client_events(data: bytes) -> list[str]:
    """The names of the events ``pop3_client_one_input`` saw, for tests of its seeds."""
    return _pop3_client_run(*_client_tape(data))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "smtp": smtp_one_input,
    "pop3": pop3_one_input,
    "smtp-client": smtp_client_one_input,
    "pop3-client": pop3_client_one_input,
}


def main() -> None:
    """``atheris_engines.py smtp|pop3 [libFuzzer arguments]``."""
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(TARGETS)} [libFuzzer arguments]")
    import atheris  # noqa: PLC0415 - a fuzz extra, not a test dependency

    root = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(root), str(root / "src")]
    target = TARGETS[sys.argv[1]]
    with atheris.instrument_imports(include=["nosend_proto"]):
        import nosend_proto.pop3_client  # noqa: F401, PLC0415
        import nosend_proto.pop3_state  # noqa: F401, PLC0415
        import nosend_proto.smtp_client  # noqa: F401, PLC0415
        import nosend_proto.smtp_state  # noqa: F401, PLC0415
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
