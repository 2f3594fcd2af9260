-- The size of the disk an image's disk file describes (qcow2's virtual size; a raw file's size):
-- an instance's disk is at least this, and by default exactly this (rounded up to whole GiB), so
-- what is reserved on a host is what the disk can grow to. NULL for images without a disk, and
-- for disk images registered before it was recorded (their instances keep the old rule).
ALTER TABLE images ADD COLUMN disk_virtual_bytes bigint CHECK (disk_virtual_bytes > 0);
