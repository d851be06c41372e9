"""Links, dialling and the exchange cycle: getting mail to and from the world.

An exchange relays the outbound queue to the smarthost (:mod:`nosend_link.relay`) and
fetches the remote POP3 accounts (:mod:`nosend_link.fetch`), one after the other
(:mod:`nosend_link.exchange`). A cycle brings a link up around an exchange and down
again whatever happens, and records what it moved and cost (:mod:`nosend_link.cycle`,
:mod:`nosend_link.ledger`); the scheduler decides when (:mod:`nosend_link.schedule`,
:mod:`nosend_link.scheduler_loop`). ``docs/architecture.md`` lists every module.
"""
