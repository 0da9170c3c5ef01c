-- Rooms count their members as memberships come and go, so a room summary (sent for
-- every room at every connect) reads a number instead of counting thousands of rows.
ALTER TABLE rooms ADD COLUMN member_count BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET member_count = (SELECT COUNT(*) FROM memberships m WHERE m.room_id = rooms.id);

-- Unread counts look for people's messages after a read position; join and leave
-- notices (which can be thousands in a big room) are not in this index, so the search
-- does not wade through them.
CREATE INDEX messages_text ON messages(room_id, seq, sender_id) WHERE kind = 'text';
