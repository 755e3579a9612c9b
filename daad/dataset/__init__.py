"""Building the dataset from the registry: rows, shards, the card."""
