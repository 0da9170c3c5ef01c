-- Any text is a valid message, NUL included, but PostgreSQL's text type cannot hold
-- NUL. Message bodies are kept as their UTF-8 bytes instead (SQLite's TEXT keeps NUL
-- as it is, so its schema needs no change).
ALTER TABLE messages ALTER COLUMN body TYPE BYTEA USING convert_to(body, 'UTF8');
