"""Drive the engines over real I/O: inetd, the anyio server, the sessions and nosend's
own mail backend.

Layout: ``inetd`` and ``anyio_server`` are the two runners; ``serve/`` carries sessions
over connections (streams, TLS, limits, logging, activation, the asyncio fast paths);
``session/`` holds the session boundary, the backend interface and the SMTP and POP3
sessions; ``mail/`` is the default backend (policy, delivery, housekeeping); ``testing/``
holds the in-memory harness and the echo session, which production code never starts.
Runners hold no protocol logic and the sessions hold no I/O; the same session code runs
under every runner. See docs/architecture.md.
"""
