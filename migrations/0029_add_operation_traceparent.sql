-- The W3C trace context of the request that created an operation: the executor that carries it
-- out (any replica, perhaps after a restart) continues the same trace, and the API shows its id.
ALTER TABLE operations ADD COLUMN traceparent text;
