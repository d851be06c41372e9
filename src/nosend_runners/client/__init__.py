"""Client-side I/O for the transport: TLS contexts and connections to upstream servers.

The sans-IO client engines in ``nosend_proto`` speak SMTP and POP3; this package opens
the TCP connection, upgrades it to TLS with the account's verification rules and carries
the engines' bytes. It holds no protocol logic and no policy about what to send.
"""
