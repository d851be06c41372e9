"""Durable mail storage and configuration: Maildirs, the outbound queue, ``mail.cfg``.

Standard library only. Every write that a caller may acknowledge is fsynced, renamed
into place and its directory fsynced first.
"""
