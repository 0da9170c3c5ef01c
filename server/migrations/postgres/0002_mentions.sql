-- Who was @mentioned in which message, resolved when the message is stored, so unread
-- mention counts are one indexed count rather than a text search.
CREATE TABLE mentions (
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    room_id    BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX mentions_user_room ON mentions(user_id, room_id, seq);
