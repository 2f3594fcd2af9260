-- Deleted instances stay as rows (their history); they no longer keep their image from being
-- deleted: the reference of such a row is cleared when the image goes. Live instances still
-- protect their image (the API refuses the delete, holding the image row locked meanwhile).
ALTER TABLE instances ALTER COLUMN image_id DROP NOT NULL;
ALTER TABLE instances DROP CONSTRAINT instances_image_id_fkey;
ALTER TABLE instances ADD CONSTRAINT instances_image_id_fkey
    FOREIGN KEY (image_id) REFERENCES images (id) ON DELETE SET NULL;
