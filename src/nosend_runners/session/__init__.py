"""The server sessions and the boundary they share with the runners.

Owns: the session boundary (``boundary``: the ``Stream`` a session reads and writes and the
per-connection ``SessionContext``), the backend interface a session consults for policy and
storage (``backend``), the SMTP and POP3 sessions (``smtp``, ``pop3``), the credential
check both share (``login``) and the table from service name to session (``services``).
Must not: open sockets or files, or decide who may send or receive; a backend does that.
"""
