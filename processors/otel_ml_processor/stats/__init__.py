"""Pure statistics of the compute stage: functions of numpy arrays, no I/O, no config.

Every function names its definition (DESIGN.md "Statistics") and its oracle in its docstring;
``tests/stats`` holds each one against scipy / scikit-learn / fairlearn on the same rows.

Modules: :mod:`.performance` (labeled-window metrics and their Wilson intervals), :mod:`.ood`,
:mod:`.registry` (drift tests: :mod:`.ks`, :mod:`.psi`, :mod:`.jensenshannon`,
:mod:`.wasserstein`, :mod:`.chi2`), :mod:`.noise` (noise floors of the distance scores),
:mod:`.decisions` (Benjamini-Hochberg, family levels), :mod:`.multivariate` (PCA reconstruction
error), :mod:`.fairness` (with p-values), :mod:`.cbpe`.

Example::

    import numpy as np
    from otel_ml_processor.stats import registry

    tests = registry.builtin_tests()
    ref = registry.FeatureReference.build(np.arange(100.0))
    state = tests["ks"].prepare(ref, "numeric")
    res = tests["ks"].compute(state, registry.FeatureWindow.build(np.arange(50.0) + 30))
    print(res.score, res.pvalue)
"""
