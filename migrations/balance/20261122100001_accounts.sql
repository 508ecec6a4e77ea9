-- Balance domain (schema `balance`): money per user, in cents.
-- A TCC try moves `available` to `frozen`; confirm moves `frozen` to `spent`; cancel moves
-- it back. available + frozen + spent is conserved per user.
CREATE TABLE accounts (
    user_id   bigint PRIMARY KEY,
    available bigint NOT NULL CHECK (available >= 0),
    frozen    bigint NOT NULL DEFAULT 0 CHECK (frozen >= 0),
    spent     bigint NOT NULL DEFAULT 0
);
