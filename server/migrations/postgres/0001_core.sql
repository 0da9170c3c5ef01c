-- Accounts, sessions, rooms, memberships and messages.
-- Times are Unix milliseconds (BIGINT) so the same queries run on SQLite and PostgreSQL.

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT   NOT NULL,
    -- lower(username): uniqueness ignores case, so "Alice" and "alice" are one account.
    username_key  TEXT   NOT NULL UNIQUE,
    display_name  TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- SHA-256 of the cookie's token: a stolen database does not yield usable cookies.
    token_hash   TEXT   NOT NULL UNIQUE,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE rooms (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT   NOT NULL,
    name_key   TEXT   NOT NULL UNIQUE,
    kind       TEXT   NOT NULL CHECK (kind IN ('public', 'direct')),
    topic      TEXT   NOT NULL DEFAULT '',
    created_by BIGINT REFERENCES users(id),
    created_at BIGINT NOT NULL,
    -- Sequence number of the newest message; bumped in the same transaction that
    -- inserts the message, which is what makes per-room numbering gap-free.
    last_seq   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE memberships (
    room_id       BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at     BIGINT NOT NULL,
    delivered_seq BIGINT NOT NULL DEFAULT 0,
    read_seq      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

CREATE TABLE messages (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id    BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    sender_id  BIGINT NOT NULL REFERENCES users(id),
    kind       TEXT   NOT NULL CHECK (kind IN ('text', 'joined', 'left')),
    body       TEXT   NOT NULL,
    -- The sender's own id for the message; a retry with the same id finds this row.
    client_id  TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (room_id, seq),
    UNIQUE (sender_id, client_id)
);
