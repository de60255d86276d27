-- Undo (issue 13): the before-image of an item, the prior value of each key its job touches,
-- read with GetResources just before the item's call and written before that call is sent (so
-- a call that lands before its outcome is recorded still has it). Compact JSON of only the
-- touched keys, {"Owner": "a", "Team": null} (null: the key was absent), or '{}' when the read
-- found nothing to change; NULL when no before-image was kept (--no-before-images, or a job of
-- an older bulktag). A nullable column costs nothing on rows without it: one header byte.
ALTER TABLE items ADD COLUMN before_tags TEXT;
