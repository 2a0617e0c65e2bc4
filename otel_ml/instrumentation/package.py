# Frameworks instrumented when present: any one of them is enough, none is required, so the
# instrumentor declares no hard dependency (``_instruments`` is empty).
_instruments: tuple = ()
_instruments_any = (
    "scikit-learn >= 1.3",
    "xgboost >= 2.0",
    "lightgbm >= 4.0",
    "onnxruntime >= 1.17",
)
