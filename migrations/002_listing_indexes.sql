-- Indexes for GET /payments: keyset pagination in the order (created_at DESC, payment_id DESC),
-- unfiltered or filtered by one of state, customer or merchant.
--
--  * A page is `WHERE [filter = $1 AND] (created_at, payment_id) < ($2, $3)
--    ORDER BY created_at DESC, payment_id DESC LIMIT n`: with the filter column first and
--    the sort columns after it in the same directions, PostgreSQL reads exactly n rows from
--    the index (an index range scan that starts at the cursor), whatever page it is on — no
--    OFFSET, no sort, no cost growing with the page number.
--  * payment_id breaks ties: many payments share a created_at (the sink stores the time of
--    the first state change, in milliseconds), and a keyset needs a total order.
--  * since / until (a created_at range) use the same indexes.
--  * A query with two filters uses one of these and filters the rest; the composite indexes
--    make 001's idx_current_state and idx_customer_id redundant for listing, but they stay:
--    dropping indexes is a separate, reviewed decision.
--  * The migration runner applies each file in a transaction, so CREATE INDEX CONCURRENTLY
--    is not possible here and these builds block writes to payment_states while they run
--    (the sink waits and retries; payments keep moving). On a large table, a DBA can first
--    build them by hand with CREATE INDEX CONCURRENTLY under the same names: IF NOT EXISTS
--    then makes this file a no-op.

CREATE INDEX IF NOT EXISTS idx_payment_states_created_keyset
    ON payment_states (created_at DESC, payment_id DESC);

CREATE INDEX IF NOT EXISTS idx_payment_states_state_created_keyset
    ON payment_states (current_state, created_at DESC, payment_id DESC);

CREATE INDEX IF NOT EXISTS idx_payment_states_customer_created_keyset
    ON payment_states (customer_id, created_at DESC, payment_id DESC);

CREATE INDEX IF NOT EXISTS idx_payment_states_merchant_created_keyset
    ON payment_states (merchant_id, created_at DESC, payment_id DESC);
