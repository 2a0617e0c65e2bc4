"""Receive stage: OTLP decoding, the gRPC and HTTP servers, auth and request limits."""
