-- Points domain (schema `points`): loyalty points per user; never negative.
CREATE TABLE points (
    user_id bigint PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);
