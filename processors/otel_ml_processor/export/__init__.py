"""Export stage: Prometheus exposition of the counters and the last computed snapshot."""
