"""Compute leases in PostgreSQL: which replica computes which model version, for how long.

Several replicas share one PostgreSQL (docs/scaling.md): any of them stores any event, and the
compute of each model version belongs to one replica at a time, the holder of its lease (table
``compute_leases``). Each compute cycle a replica calls :meth:`Leases.round` once:

1. it writes its heartbeat (``replicas.seen_at``, the database's clock) and counts the live
   replicas (seen within the lease's time to live);
2. its fair share is ``ceil(versions / live replicas)``: past it, it releases the leases it holds
   beyond its share (a returning replica finds them free), then renews the others until
   ``now + ttl``;
3. below it, it takes free leases: versions with no lease yet, or whose lease expired (a dead
   holder's, ``ttl`` after its last renewal), each in a statement of its own whose ``WHERE``
   PostgreSQL checks again once it has the row lock, so two replicas never both take one.

Nothing else coordinates the replicas: no membership protocol, no leader. A dead replica's
versions are taken within ``ttl`` plus one compute interval of its last renewal; with the
default ``ttl`` of 1.5 intervals, within 2.5 intervals plus the taker's compute. All times are the database's clock,
so the replicas' own clocks may differ.

Example::

    leases = Leases(engine, replica="host-a/0.0.0.0:4317")
    held = leases.round(ttl=30.0)      # {(model, version): takeovers} this replica holds now
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import Engine, and_, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert

from otel_ml_processor.store import schema

_LEASE, _REPLICAS, _MV = schema.compute_leases, schema.replicas, schema.model_versions
#: ``holder`` of a released lease (free at once)
NOBODY = ""


@dataclass
class Round:
    """What one :meth:`Leases.round` did."""

    held: dict = field(default_factory=dict)      # (model, version) -> takeovers, held until the next round
    taken: list = field(default_factory=list)     # (model, version) taken this round
    released: list = field(default_factory=list)  # (model, version) given up this round (past the share)
    live: int = 1                                 # replicas seen within ttl, this one included
    share: int = 0                                # ceil(versions / live)


class Leases:
    """One replica's side of the compute leases (PostgreSQL only)."""

    def __init__(self, engine: Engine, replica: str):
        self.engine, self.replica = engine, replica

    def round(self, ttl: float) -> Round:
        """Heartbeat, release past the share, renew, take free leases (see the module)."""
        out = Round()
        me = self.replica
        with self.engine.begin() as conn:
            now = float(conn.execute(select(func.extract("epoch", func.clock_timestamp()))).scalar_one())
            beat = insert(_REPLICAS).values(replica=me, seen_at=now)
            conn.execute(beat.on_conflict_do_update(index_elements=[_REPLICAS.c.replica], set_={"seen_at": now}))
            out.live = max(1, int(conn.execute(select(func.count()).select_from(_REPLICAS).where(
                _REPLICAS.c.seen_at >= now - ttl)).scalar_one()))
            versions = [tuple(r) for r in conn.execute(select(_MV.c.model, _MV.c.model_version).order_by(
                _MV.c.model, _MV.c.model_version))]
            leases = {(m, v): (h, e, t) for m, v, h, e, t in conn.execute(select(
                _LEASE.c.model, _LEASE.c.model_version, _LEASE.c.holder, _LEASE.c.expires_at, _LEASE.c.takeovers))}
            out.share = math.ceil(len(versions) / out.live) if versions else 0
            mine = sorted(k for k, (h, _e, _t) in leases.items() if h == me)
            # Past the share (a replica came back, or this one took many while alone): give the
            # last ones up now, expired at once, and stop computing them (the caller drops them).
            out.released = mine[out.share:]
            for m, v in out.released:
                conn.execute(update(_LEASE).where(_LEASE.c.model == m, _LEASE.c.model_version == v,
                                                  _LEASE.c.holder == me).values(holder=NOBODY, expires_at=0.0))
            # Renew: only while still ours (an expired lease another replica took is not).
            renewed = conn.execute(update(_LEASE).where(_LEASE.c.holder == me).values(
                expires_at=now + ttl).returning(_LEASE.c.model, _LEASE.c.model_version, _LEASE.c.takeovers)).all()
            out.held = {(m, v): t for m, v, t in renewed}
        # Take free leases, one short transaction each: a replica never waits on a row lock while
        # holding another (no deadlock between replicas taking each other's expired leases).
        free = [k for k in versions if k not in out.held and k not in out.released
                and (k not in leases or leases[k][1] < now)]
        for m, v in self._spread(free):
            if len(out.held) >= out.share:
                break
            got = self._take(m, v, now, ttl)
            if got is not None:
                out.held[(m, v)] = got
                out.taken.append((m, v))
        return out

    def _spread(self, keys: list) -> list:
        """Free versions in an order of this replica's own (a hash of its name), so that replicas
        taking at the same moment mostly try different rows first."""
        return sorted(keys, key=lambda k: hash((self.replica, k)))

    def _take(self, model: str, version: str, now: float, ttl: float):
        """Take one free lease; its takeovers count, or None when another replica was first."""
        me = self.replica
        with self.engine.begin() as conn:
            new = insert(_LEASE).values(model=model, model_version=version, holder=me, expires_at=now + ttl,
                                        acquired_at=now, takeovers=0)
            got = conn.execute(new.on_conflict_do_nothing().returning(_LEASE.c.takeovers)).first()
            if got is None:
                # PostgreSQL evaluates this WHERE again on the row it locked: one taker wins.
                got = conn.execute(update(_LEASE).where(and_(
                    _LEASE.c.model == model, _LEASE.c.model_version == version,
                    _LEASE.c.expires_at < literal(now))).values(
                    holder=me, expires_at=now + ttl, acquired_at=now,
                    takeovers=_LEASE.c.takeovers + 1).returning(_LEASE.c.takeovers)).first()
        return None if got is None else got[0]

    def holders(self) -> dict:
        """{(model, version): (holder, expires_at)} of every lease (any replica may read them)."""
        with self.engine.connect() as conn:
            return {(m, v): (h, e) for m, v, h, e in conn.execute(select(
                _LEASE.c.model, _LEASE.c.model_version, _LEASE.c.holder, _LEASE.c.expires_at))}

    def give_up(self) -> None:
        """Release every lease this replica holds (a clean shutdown: others take them at once)."""
        with self.engine.begin() as conn:
            conn.execute(update(_LEASE).where(_LEASE.c.holder == self.replica).values(holder=NOBODY, expires_at=0.0))
            conn.execute(_REPLICAS.delete().where(_REPLICAS.c.replica == self.replica))
