"""Clean stage: validate events against the wire contract, then anonymize them."""
