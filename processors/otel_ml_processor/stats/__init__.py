"""Pure statistics of the compute stage: functions of numpy arrays, no I/O, no config.

Every function names its definition (DESIGN.md "Statistics") and its oracle in its docstring;
``tests/stats`` holds each one against scipy / scikit-learn / fairlearn on the same rows.

Modules: :mod:`.performance` (labeled-window metrics), :mod:`.ood`, :mod:`.registry` (drift
tests: :mod:`.ks`, :mod:`.psi`, :mod:`.jensenshannon`, :mod:`.wasserstein`, :mod:`.chi2`),
:mod:`.multivariate` (PCA reconstruction error), :mod:`.fairness`, :mod:`.cbpe`.

Example::

    import numpy as np
    from otel_ml_processor.stats import registry

    tests = registry.builtin_tests()
    ref = registry.FeatureReference.build(np.arange(100.0))
    res = tests["ks"].compute(ref, registry.FeatureWindow(np.arange(50.0) + 30), "numeric")
    print(res.score, res.pvalue)
"""
