"""Model pages: server-rendered HTML with inline SVG, served beside ``/metrics`` and written by
``otel-ml report``.

- :mod:`.source`: where computed snapshots come from (:class:`~.source.SnapshotSource`);
- :mod:`.render`: the HTML of ``/`` and ``/models/<name>`` (pure functions);
- :mod:`.svg`: the small charts; :mod:`.theme`: the stylesheet and its Content-Security-Policy.

The web side never computes: the per-feature histograms come from the compute cycle
(``compute/histograms.py``).
"""
