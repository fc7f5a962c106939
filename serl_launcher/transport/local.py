"""In-process backend: the LearnerServer / ActorClient API and semantics without sockets.

For tests and single-process debugging. Everything still goes through the codec (so what
works here works over the network: same dtypes, same refusals, same snapshot semantics), and
through the same Outbox / SessionTable bookkeeping, but delivery is synchronous: while a server
is started, `send_transition` calls its on_transitions before returning; while none is, the
transitions wait in the client's queue (capacity and drop-oldest as over the network) and are
delivered when a server starts. Clients and servers may start in any order; a hub serves one
started server at a time.

    hub = LocalHub()
    server = hub.server(on_transitions, on_stats).start()
    client = hub.client("actor-0").start()
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from serl_launcher.transport._io import valid_actor_id
from serl_launcher.transport.client import Credit, ParamsSlot
from serl_launcher.transport.codec import MessageTooLarge, decode, pack_value, unpack_value
from serl_launcher.transport.config import TransportConfig
from serl_launcher.transport.reliability import Outbox, SessionTable
from serl_launcher.transport.server import (
    REJECT_REASONS,
    Allowance,
    OnStats,
    OnTransitions,
    TransitionSink,
    as_sink,
    check_stats,
    credit_share,
    params_frame,
)

logger = logging.getLogger(__name__)


class LocalHub:
    """Connects LocalServer and LocalClient objects in one process."""

    def __init__(self, config: TransportConfig | None = None):
        self.config = config or TransportConfig()
        self.config.validate()
        self._lock = threading.RLock()  # re-entrant: callbacks may publish params or send
        self._server: LocalServer | None = None
        self._clients: list[LocalClient] = []
        self._params: tuple[str, int, bytes] | None = None  # (epoch, step, frame)

    def server(self, sink: TransitionSink | OnTransitions, on_stats: OnStats | None = None,
               allowance: Allowance | None = None) -> LocalServer:
        """A learner end; call start() on it."""
        return LocalServer(self, sink, on_stats, allowance)

    def client(self, actor_id: str) -> LocalClient:
        """An actor end; call start() on it."""
        return LocalClient(self, actor_id)

    # Called with self._lock held.
    def _deliver(self, client: LocalClient) -> None:
        server = self._server
        if server is None or not client._started:
            return
        batch_size = self.config.send_batch_size
        while True:
            batch = client._outbox.peek_batch(batch_size, 1 << 62, batch_size)
            if batch is None:
                server._grant(client)
                return
            first, base, items = batch
            if not server._receive(client, first, base, items):
                return  # the sink raised: the items stay queued, retried on the next call


class LocalServer:
    """In-process LearnerServer (see LearnerServer for the semantics); made by LocalHub."""

    def __init__(self, hub: LocalHub, sink: TransitionSink | OnTransitions,
                 on_stats: OnStats | None, allowance: Allowance | None = None):
        self.hub = hub
        self.config = hub.config
        self.epoch = secrets.token_hex(8)
        self._sink = as_sink(sink)
        self._on_stats = on_stats
        self._allowance = allowance
        self._table = SessionTable(max_actors=self.config.max_actors)
        self._table.seed(self._sink.delivered())
        self._stats: dict[str, Any] = {
            "accepted": 0, "rejected": dict.fromkeys(REJECT_REASONS, 0), "transitions": 0,
            "rejected_transitions": 0, "duplicates": 0, "gaps": 0, "callback_errors": 0,
            "params_published": 0, "params_replies": 0, "credit_grants": 0,
        }

    def start(self) -> LocalServer:
        with self.hub._lock:
            if self.hub._server is not None and self.hub._server is not self:
                raise RuntimeError("this LocalHub already has a started server")
            self.hub._server = self
            for client in list(self.hub._clients):
                self.hub._deliver(client)
        return self

    def publish_params(self, step: int, params: Any, env_steps: int | None = None) -> None:
        """Makes `params` the hub's current params (encoded now: a snapshot)."""
        step = int(step)
        frame = params_frame(self.epoch, step, params, None, self.config.max_message_bytes, env_steps)
        with self.hub._lock:
            self.hub._params = (self.epoch, step, frame)
            self._stats["params_published"] += 1
            clients = list(self.hub._clients)
        for client in clients:
            client._params_changed()

    @property
    def actors(self) -> dict[str, dict]:
        return self._table.actors()

    @property
    def stats(self) -> dict[str, Any]:
        with self.hub._lock:
            return {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items()}

    def close(self) -> None:
        with self.hub._lock:
            if self.hub._server is self:
                self.hub._server = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def notify_credit(self) -> None:
        """Credit is handed out on every delivery here; waiting clients are told at once."""
        with self.hub._lock:
            clients = list(self.hub._clients)
        for client in clients:
            self._grant(client)

    def _grant(self, client: LocalClient) -> None:
        acked = self._table.acked(client.actor_id, client.session)
        client.credit.grant(acked, credit_share(self._allowance, self._table.active_actors()))

    def _receive(self, client: LocalClient, first: int, base: int, items: list[bytes]) -> bool:
        actor_id, session = client.actor_id, client.session
        plan = self._table.plan(actor_id, session, first, base, len(items), client.dropped)
        if plan.refused:
            self._stats["rejected"][plan.refused] += 1
            return False
        self._stats["accepted"] += 1
        self._stats["duplicates"] += plan.offset
        if not plan.nack and plan.count:
            batch = [unpack_value(item) for item in items[plan.offset : plan.offset + plan.count]]
            try:
                reasons = self._sink.deliver(actor_id, session, first + plan.offset, batch)
                if len(reasons) != len(batch):
                    raise RuntimeError(f"sink answered {len(reasons)} of {len(batch)} transitions")
                self._sink.commit()
            except Exception:
                self._stats["callback_errors"] += 1
                logger.exception("delivering transitions of actor %r failed; retried later",
                                 actor_id)
                return False
            rejected = sum(r is not None for r in reasons)
            for r in reasons:
                if r is not None:
                    reason = r.split(":")[0]
                    client.rejected[reason] = client.rejected.get(reason, 0) + 1
            self._table.commit(actor_id, session, plan.count)
            self._stats["transitions"] += plan.count - rejected
            self._stats["rejected_transitions"] += rejected
        client._outbox.ack(self._table.acked(actor_id, session))
        self._grant(client)
        return True

    def _receive_stats(self, actor_id: str, session: str, stats: dict) -> None:
        check_stats(stats)
        self._table.count_stats(actor_id)
        self._stats["accepted"] += 1
        if self._on_stats is not None:
            try:
                self._on_stats(actor_id, stats)
            except Exception:
                logger.exception("on_stats raised for actor %r", actor_id)


class LocalClient:
    """In-process ActorClient (see ActorClient for the semantics); made by LocalHub."""

    def __init__(self, hub: LocalHub, actor_id: str):
        if not valid_actor_id(actor_id):
            raise ValueError(f"actor_id must be 1-64 characters of letters, digits and ._-@: "
                             f"(got {actor_id!r})")
        self.hub = hub
        self.config = hub.config
        self.actor_id = actor_id
        self.session = secrets.token_hex(8)
        self._outbox = Outbox(self.config.actor_queue_capacity, self.config.actor_queue_max_bytes)
        self._params = ParamsSlot()
        self._started = False
        self.credit = Credit()
        self.rejected: dict[str, int] = {}

    def start(self) -> LocalClient:
        with self.hub._lock:
            self._started = True
            self.hub._clients.append(self)
            self.hub._deliver(self)
        self._params_changed()
        return self

    def send_transition(self, transition: dict) -> None:
        item = pack_value(transition)
        if len(item) > self.config.max_message_bytes:
            raise MessageTooLarge(f"one transition encodes to {len(item)} bytes")
        dropped = self._outbox.put(item)
        if dropped:
            logger.warning("actor %r: queue full, dropped %d oldest transition(s), %d so far",
                           self.actor_id, dropped, self._outbox.dropped)
        with self.hub._lock:
            self.hub._deliver(self)

    def send_stats(self, stats: dict) -> None:
        stats = unpack_value(pack_value(stats))  # same copy and type rules as the network
        with self.hub._lock:
            if self.hub._server is not None and self._started:
                self.hub._server._receive_stats(self.actor_id, self.session, stats)

    def latest_params(self) -> tuple[int, dict] | None:
        return self._params.latest()

    def params_snapshot(self) -> tuple[str | None, int, dict | None, int | None]:
        return self._params.snapshot()

    def credit_left(self) -> int | None:
        return self.credit.left(self._outbox.next_seq)

    def wait_for_credit(self, timeout: float) -> bool:
        return self.credit.wait(lambda: self._outbox.next_seq, timeout)

    @property
    def spooled(self) -> int:
        return 0

    @property
    def spool_errors(self) -> int:
        return 0

    @property
    def acked(self) -> int:
        return self._outbox.base - 1

    def wait_for_params(
        self, timeout: float, newer_than: int | None = None
    ) -> tuple[int, dict] | None:
        return self._params.wait(timeout, newer_than)

    @property
    def pending(self) -> int:
        return self._outbox.pending

    @property
    def dropped(self) -> int:
        return self._outbox.dropped

    def flush(self, timeout: float) -> bool:
        with self.hub._lock:
            self.hub._deliver(self)
        return self._outbox.wait_empty(timeout)

    def close(self) -> None:
        with self.hub._lock:
            self._started = False
            if self in self.hub._clients:
                self.hub._clients.remove(self)

    def __enter__(self) -> LocalClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _params_changed(self) -> None:
        with self.hub._lock:
            current = self.hub._params if self._started else None
        if current is None:
            return
        epoch, step, frame = current
        if self._params.is_newer(epoch, step):
            payload = decode(frame)
            self._params.set(epoch, step, payload["params"], payload.get("env_steps"))
