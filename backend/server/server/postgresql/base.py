"""Django's PostgreSQL backend, with a health check that costs no round trip.

``CONN_HEALTH_CHECKS`` makes Django check a kept connection once per request before its
first query. The stock check is ``SELECT 1``: a round trip to the server on every
prediction, for a warm predict as much as its one INSERT. Under load a kept connection
was used a millisecond ago, and the check almost always answers yes.

Here the check first asks the socket. An idle connection in autocommit has nothing to
read: the server has nothing to say until it is asked. If the socket is readable, the
server spoke unasked, and the connection is checked the stock way. It may have sent an
error and closed ("terminating connection": a restart, pg_terminate_backend, an idle
timeout), or the connection may have been reset (a proxy, a failover). A harmless
ParameterStatus also lands here; the stock check reads it away. The Go MySQL driver
checks its pooled connections the same way before reuse (``connCheck``).

What it cannot see: a server that vanished without closing the connection (a host that
lost power, a cut cable). The stock ping would hang on that too, until a TCP timeout; the
query then fails, and the request answers 503 (``database_unavailable``). Django closes
the broken connection at the end of that request, and the next one reconnects.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        if connection.info.transaction_status != pq.TransactionStatus.IDLE:
            return bool(super().is_usable())  # mid-transaction: only the server knows
        # poll, not select: select refuses descriptors past 1023, and a worker with many
        # open files would then reconnect before every request.
        poller = select.poll()
        try:
            poller.register(connection.fileno(), select.POLLIN)
            readable = poller.poll(0)
        except (OSError, ValueError):  # the descriptor is gone
            return False
        return not readable or bool(super().is_usable())
