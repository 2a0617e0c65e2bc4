"""Where the pages read computed metrics from: a small typed interface, :class:`SnapshotSource`.

The pages never compute. They read the last computed :class:`ModelSnapshot` of a (model,
version) from a source. Two sources exist:

- :class:`ComputerSource`: the local compute thread's last snapshot (one processor on SQLite,
  or the models this replica owns);
- :class:`~.database_source.DatabaseSource`: every model version in the shared database, from
  its owner's last snapshot (several replicas on PostgreSQL: any replica serves any model's
  page), and this replica's own versions from its local snapshot.

"Latest version" of a model: the greatest version string in natural order (``"10"`` after
``"9"``, ``"v2"`` after ``"v1"``, digits compared as numbers).

Example::

    source = ComputerSource(lambda: computer.snapshot)
    for snap in source.models():
        print(snap.model, snap.version, snap.metrics.window_predictions)
    source.keys()                     # [("churn", "3"), ("churn", "2"), ...]: nothing decoded
    source.latest("churn")            # its latest version, or None
    source.latest("churn", "3")       # version 3
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Protocol, runtime_checkable

from otel_ml_processor.compute.engine import ModelMetrics

if TYPE_CHECKING:
    from otel_ml_processor.compute.manager import Snapshot

__all__ = ["ModelSnapshot", "SnapshotSource", "ComputerSource", "version_key", "latest_version", "sorted_keys"]


@dataclass(frozen=True)
class ModelSnapshot:
    """One (model, version)'s last computed metrics, as the pages show them."""

    model: str
    version: str
    metrics: ModelMetrics
    computed_at: Optional[float] = None        # unix seconds
    compute_seconds: Optional[float] = None
    owner: Optional[str] = None                # the replica that computed it (several replicas)


@runtime_checkable
class SnapshotSource(Protocol):
    def models(self) -> list:
        """Every (model, version) with a computed snapshot: a list of :class:`ModelSnapshot`,
        sorted by model, then version (latest first). For ``/``: a source may leave out of
        ``metrics`` what ``/`` does not show (it keeps the window counts, OOD ratio and drift)."""

    def keys(self) -> list:
        """The (model, version) pairs of :meth:`models`, in its order, without reading any metrics."""

    def latest(self, model: str, version: Optional[str] = None) -> Optional[ModelSnapshot]:
        """The snapshot of ``model`` at ``version`` (None: its latest version); None when there is none."""


_DIGITS = re.compile(r"(\d+)")


def version_key(version: str) -> tuple:
    """Natural order: digit runs compare as numbers, the rest as text."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _DIGITS.split(version) if p)


def latest_version(versions) -> Optional[str]:
    versions = list(versions)
    return max(versions, key=version_key) if versions else None


def sorted_keys(keys) -> list:
    """(model, version) pairs by model, each model's latest version first."""
    out = sorted(keys, key=lambda k: version_key(k[1]), reverse=True)
    out.sort(key=lambda k: k[0])   # stable
    return out


class ComputerSource:
    """A :class:`SnapshotSource` over the compute thread's last snapshot
    (``compute.manager.Snapshot``: ``models``, ``computed_at``, ``durations`` keyed by (model, version))."""

    def __init__(self, snapshot: Callable[[], Snapshot], owner: Optional[str] = None):
        self._snapshot = snapshot
        self._owner = owner

    def _view(self, snap, key) -> ModelSnapshot:
        return ModelSnapshot(key[0], key[1], snap.models[key], snap.computed_at.get(key),
                             snap.durations.get(key), self._owner)

    def models(self) -> list:
        snap = self._snapshot()
        return [self._view(snap, key) for key in sorted_keys(snap.models)]

    def keys(self) -> list:
        return sorted_keys(self._snapshot().models)

    def latest(self, model: str, version: Optional[str] = None) -> Optional[ModelSnapshot]:
        snap = self._snapshot()
        if version is None:
            version = latest_version(v for m, v in snap.models if m == model)
        if version is None or (model, version) not in snap.models:
            return None
        return self._view(snap, (model, version))
