-- Disaster recovery: an instance with a DR priority is restored on a healthy host from its latest
-- snapshot when its host is declared dead (highest priority first); NULL: no DR policy (it stays
-- `lost`, and can be restored by hand).
ALTER TABLE instances ADD COLUMN dr_priority integer CHECK (dr_priority BETWEEN 0 AND 1000);
CREATE INDEX instances_lost_with_dr ON instances (dr_priority DESC, created_at)
    WHERE state = 'lost' AND dr_priority IS NOT NULL AND deleted_at IS NULL;
