"""Drive the engines over real I/O: inetd, the anyio server and an in-memory harness.

Runners hold no protocol logic and the sessions hold no I/O; the same session code runs
under every runner.
"""
