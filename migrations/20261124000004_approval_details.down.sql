ALTER TABLE steps DROP COLUMN approval_details;
