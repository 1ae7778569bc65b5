-- batch_run --
-- An atomic batch of writes in one database transaction (resilience.tx_run).
select resilience.tx_run(%(operations)s)
