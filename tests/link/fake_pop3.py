"""A tiny POP3 server in a thread, for behaviour real servers do not offer: no UIDL,
no CAPA, no PIPELINING. Plain TCP, one mailbox of messages kept in memory, deletions
applied at QUIT (RFC 1939 section 6) and only then."""

from __future__ import annotations

import socket
import threading


class FakePOP3:
    """Serves ``messages`` (CRLF line ends) to user ``user`` with password ``password``."""

    def __init__(self, messages: list[bytes], user: str = "u", password: str = "p",
                 *, uidl: bool = False, capa: bool = False, lie: bool = False,
                 inject: bool = False) -> None:
        self.messages = list(messages)
        self.user, self.password = user, password
        self.uidl, self.capa, self.lie, self.inject = uidl, capa, lie, inject
        self.commands: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                try:
                    self._session(conn.makefile("rb"), conn)
                except OSError:
                    pass

    def _session(self, reader, conn: socket.socket) -> None:  # type: ignore[no-untyped-def]
        conn.sendall(b"+OK fake ready\r\n")
        deleted: set[int] = set()
        logged_in = False
        while True:
            line = reader.readline()
            if not line:
                return  # dropped: nothing deleted
            words = line.decode().strip().split()
            verb = words[0].upper() if words else ""
            self.commands.append(verb)
            if verb == "CAPA" and self.capa:
                conn.sendall(b"+OK\r\nUSER\r\n" + (b"UIDL\r\n" if self.uidl else b"")
                             + (b"STLS\r\n" if self.inject else b"") + b".\r\n")
            elif verb == "STLS" and self.inject:
                # CVE-2011-0411's attack: an answer in clear, to be read as if under TLS
                conn.sendall(b"+OK go ahead\r\n+OK logged in\r\n")
            elif verb == "USER":
                conn.sendall(b"+OK\r\n")
            elif verb == "PASS":
                logged_in = words[1:] == [self.password]
                conn.sendall(b"+OK in\r\n" if logged_in else b"-ERR [AUTH] no\r\n")
            elif verb == "LIST" and logged_in:
                rows = b"".join(b"%d %d\r\n" % (i + 1, 10 if self.lie else len(m)) for i, m in
                                enumerate(self.messages) if i not in deleted)
                conn.sendall(b"+OK\r\n" + rows + b".\r\n")
            elif verb == "UIDL" and logged_in and self.uidl:
                rows = b"".join(b"%d id%d\r\n" % (i + 1, hash(m) & 0xFFFF) for i, m in
                                enumerate(self.messages) if i not in deleted)
                conn.sendall(b"+OK\r\n" + rows + b".\r\n")
            elif verb == "RETR" and logged_in:
                m = self.messages[int(words[1]) - 1]
                stuffed = b"\r\n".join(b"." + x if x.startswith(b".") else x
                                       for x in m.split(b"\r\n"))
                conn.sendall(b"+OK\r\n" + stuffed + (b"" if m.endswith(b"\r\n") else b"\r\n")
                             + b".\r\n")
            elif verb == "DELE" and logged_in:
                deleted.add(int(words[1]) - 1)
                conn.sendall(b"+OK\r\n")
            elif verb == "QUIT":
                self.messages = [m for i, m in enumerate(self.messages) if i not in deleted]
                conn.sendall(b"+OK bye\r\n")
                return
            else:
                conn.sendall(b"-ERR not here\r\n")
