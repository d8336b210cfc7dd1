"""Table storage index: the ONE owner of table names, PartitionKey/RowKey encoding,
entity <-> dataclass mapping, and the query planner that QIDO uses."""
