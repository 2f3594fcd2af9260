-- Which firmware boots a whole-disk image: 'uefi' (OVMF) or 'bios' (SeaBIOS). NULL for images
-- the VMM boots directly (kernel + initrd). Whole-disk images registered before were booted
-- with SeaBIOS and keep it.
ALTER TABLE images ADD COLUMN firmware text CHECK (firmware IN ('uefi', 'bios'));
UPDATE images SET firmware = 'bios' WHERE boot_mode = 'firmware';
ALTER TABLE images ADD CONSTRAINT images_firmware_iff_firmware_boot
    CHECK ((boot_mode = 'firmware') = (firmware IS NOT NULL));
