"""Carrying sessions over real connections: everything a runner needs besides a session.

Owns: the anyio byte streams and the file-descriptor stream for inetd (``streams``,
``fdstream``), TLS contexts (``tls``), connection and login limits (``limits``,
``shared_limits``), systemd socket activation (``activation``), the one-line session log
(``log``), the life of one admitted connection (``connection``), the runner settings taken
from ``mail.cfg`` (``settings``) and the asyncio-only fast paths (``fastpath``). Must not:
speak SMTP or POP3, or decide mail policy; the runners at the top of the package
(``nosend_runners.inetd``, ``nosend_runners.anyio_server``) put these pieces together.
"""
