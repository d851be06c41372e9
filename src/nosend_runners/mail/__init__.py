"""nosend's own mail backend: who may send and receive, delivery, and housekeeping.

Owns: the mail policy (``policy``), streaming a received message into Maildirs and the
outbound queue (``delivery``), the default backend that binds both to the sessions'
backend interface (``backend``) and the periodic queue and Maildir housekeeping
(``housekeeping``). Must not: speak a protocol or touch a socket.
"""
