"""Links, dialling and the exchange cycle (send the queue, fetch remote POP3 accounts).

Not built yet: it arrives with the client roles of the engines.
"""
