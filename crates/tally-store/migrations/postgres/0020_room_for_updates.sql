-- Every event updates rows of these tables in place (counts, sums, the latest activity). With
-- pages packed full, each new row version lands on another page and every index of the table
-- gets an entry for it (for users, also the trigram index). Leaving a fifth of each new page
-- free lets PostgreSQL keep the new version on the same page without touching any index (a
-- HOT update), as its documentation advises for heavily updated tables. Pages written before
-- keep their layout until rewritten.
ALTER TABLE users SET (fillfactor = 80);
ALTER TABLE user_usage SET (fillfactor = 80);
ALTER TABLE user_usage_monthly SET (fillfactor = 80);
ALTER TABLE user_usage_period SET (fillfactor = 80);
ALTER TABLE usage_hourly SET (fillfactor = 80);
ALTER TABLE usage_hourly_org SET (fillfactor = 80);
ALTER TABLE usage_monthly_org SET (fillfactor = 80);
ALTER TABLE usage_monthly_org_type SET (fillfactor = 80);
ALTER TABLE llm_daily SET (fillfactor = 80);
ALTER TABLE llm_latency_daily_org SET (fillfactor = 80);
