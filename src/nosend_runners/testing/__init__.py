"""Test tools that production code must not start.

Owns: the in-memory harness that runs a session against a scripted client (``harness``)
and the line-echo session that exercises the transport (``echo``; ``nosend serve
--session echo`` reaches it only through this package). Must not: be imported by a
production code path except when the echo session is asked for by name.
"""
