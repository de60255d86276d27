-- Undo (issue 13): the before-image of an item (same shape as
-- migrations/sqlite/0007_before_images.sql): compact JSON of the prior value of each key its job
-- touches, {"Owner": "a", "Team": null} (null: absent), '{}' when nothing was to change, NULL
-- when none was kept. A nullable column without a default is added without rewriting the table.
ALTER TABLE items ADD COLUMN before_tags TEXT;
