-- Coupons domain (schema `coupons`): single-use coupons. A coupon is used by at most one
-- order: `used_by_order` is set while it is redeemed, NULL while it is free.
CREATE TABLE coupons (
    code          text        PRIMARY KEY,
    expires_at    timestamptz NOT NULL,
    used_by_order uuid,
    used_at       timestamptz,
    CHECK ((used_by_order IS NULL) = (used_at IS NULL))
);
