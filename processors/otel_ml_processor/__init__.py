"""otel-ml processor: the hub-side service that turns ``ml.*`` OTel events into ML metrics.

Stages, each a subpackage, importing only the stages before it and the shared leaves
(``otel_ml.semconv``, ``config``, ``counters``; ``stats`` from compute on): receive -> clean ->
store -> join -> compute (windows, then ``stats``) -> export. ``service.py`` wires them
together. Run it with ``otel-ml processor --config FILE``; see ``docs/processor.md``.
"""

from otel_ml.version import __version__

__all__ = ["__version__"]
