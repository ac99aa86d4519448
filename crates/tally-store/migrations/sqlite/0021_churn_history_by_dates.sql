-- A user's churn history is read one primary-key lookup per report date (`sql::churn_source`)
-- instead of from this index, which took a random insert for every row a report wrote: a third of
-- a 90-day backfill's time on SQLite.
DROP INDEX IF EXISTS churn_scores_by_user;
