-- An executor claims the oldest unfinished operation whose lease is free. Through the index on
-- the lease's expiry, each claim read every such operation and sorted them all by age: its cost
-- grew with the backlog (2-3 ms a claim with a few thousand creates waiting). In creation order a
-- claim reads from the oldest and stops at the first free one, passing over only the operations
-- being carried out. Nothing else reads operations by their lease, so renewing one no longer
-- touches an index.
DROP INDEX operations_claimable_idx;
CREATE INDEX operations_claim_order_idx ON operations (created_at) WHERE state IN ('pending', 'running', 'undoing');
