-- What a tool tells the human who approves its call (e.g. sql_query's classification of the query).
ALTER TABLE steps ADD COLUMN approval_details jsonb;
