from otel_ml.version import __version__

__all__ = ["__version__"]
