"""Join stage: true labels meet their predictions (the atomic part is in the store's transactions)."""
