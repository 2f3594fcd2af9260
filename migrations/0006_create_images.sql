-- Base images instances boot from. project_id NULL means a public image every project can use.
CREATE TABLE images (
    id              uuid PRIMARY KEY,
    project_id      uuid REFERENCES projects (id) ON DELETE CASCADE,
    name            text NOT NULL,
    state           text NOT NULL DEFAULT 'uploading'
                    CHECK (state IN ('uploading', 'available', 'failed', 'deleting')),
    boot_mode       text NOT NULL CHECK (boot_mode IN ('direct_kernel', 'firmware')),
    disk_sha256     text CHECK (disk_sha256 ~ '^[0-9a-f]{64}$'),
    disk_size_bytes bigint CHECK (disk_size_bytes >= 0),
    kernel_sha256   text CHECK (kernel_sha256 ~ '^[0-9a-f]{64}$'),
    initrd_sha256   text CHECK (initrd_sha256 ~ '^[0-9a-f]{64}$'),
    kernel_cmdline  text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (boot_mode = 'firmware' OR kernel_sha256 IS NOT NULL OR state <> 'available')
);
CREATE UNIQUE INDEX images_project_name_idx ON images (coalesce(project_id, '00000000-0000-0000-0000-000000000000'::uuid), name);
