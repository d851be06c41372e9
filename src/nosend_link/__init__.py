"""Links, dialling and the exchange cycle (send the queue, fetch remote POP3 accounts).

Built so far: :mod:`nosend_link.fetch` (fetch one POP3 account, exactly once),
:mod:`nosend_link.transfer_events` (progress of a transfer, shared with the relay),
:mod:`nosend_link.notice` (the notice for mail held for its size),
:mod:`nosend_link.multidrop` and :mod:`nosend_link.secrets`.
"""
