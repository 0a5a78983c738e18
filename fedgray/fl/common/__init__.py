"""What both sides of a federation share: records on the wire, the config from a Flower
context, DP ledgers and central DP, each site's data partition, per-process caches."""
