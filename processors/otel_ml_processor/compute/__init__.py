"""Compute stage: windows of predictions (:mod:`.window`), references (:mod:`.reference`) and the
per-model metrics engine (:mod:`.engine`), built on the pure statistics of
:mod:`otel_ml_processor.stats`.

Example::

    from otel_ml_processor.compute.window import WindowBuffer
    from otel_ml_processor.compute.reference import reference_from_window, prepare_reference
    from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics

    buf = WindowBuffer("churn", "3", "classification", size=10000)
    ...  # buf.append(row) for each stored prediction, buf.set_label(pid, "1") as labels arrive
    spec = ModelSpec(positive_label="1")
    window = buf.snapshot()
    ref = prepare_reference(reference_from_window(window, 1000), spec)
    metrics = compute_model_metrics(window, ref, spec)
"""
