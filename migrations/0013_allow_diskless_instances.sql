-- Instances booting a kernel image need no disk of their own: disk_bytes may be 0.
ALTER TABLE instances DROP CONSTRAINT instances_disk_bytes_check;
ALTER TABLE instances ADD CONSTRAINT instances_disk_bytes_check CHECK (disk_bytes >= 0);
