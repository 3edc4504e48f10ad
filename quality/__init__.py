"""Service-quality figures: the indicators as the seeds define them (kpi: definitions, row-by-row reference
computation), the same report in SQL aggregates (kpi_sql) and the yearly evaluation of 004 §7.1
(evaluation). The desk's report, wallboard and evaluation pages call these; nothing here handles HTTP."""
