"""Export stage: Prometheus exposition of the counters and the last computed snapshot, the model pages
(``pages/``) and the web port that serves both (``http.py``, TLS and basic auth from ``webconfig.py``)."""
