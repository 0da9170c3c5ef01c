-- PostgreSQL's migration of this number stores message bodies as bytes, since its text
-- type cannot hold NUL. SQLite's TEXT holds NUL as it is: nothing to change here. (Kept
-- so both databases' migrations carry the same numbers.)
SELECT 1;
