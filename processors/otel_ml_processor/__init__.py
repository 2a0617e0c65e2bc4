"""otel-ml processor: the hub-side service that turns ``ml.*`` OTel events into ML metrics.

Stages, each a module or subpackage, importing only the stages before it and
``otel_ml.semconv``: receive -> clean -> store -> join -> compute (windows, then ``stats``)
-> export. Run it with ``otel-ml processor --config FILE``; see ``docs/processor.md``.
"""

from otel_ml.version import __version__

__all__ = ["__version__"]
