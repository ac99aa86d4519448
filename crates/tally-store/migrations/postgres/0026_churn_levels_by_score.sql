-- A risk level is a band of scores (`RiskLevel::scores`), and a query for a level also asks for
-- its band, so one index on a day's scores finds a level's rows; with the level included, a
-- level's count is still an index-only scan. A day's report writes a row for every subscriber:
-- an index less is a random insert less per row.
DROP INDEX churn_scores_by_level;
DROP INDEX churn_scores_by_date;
CREATE INDEX churn_scores_by_date ON churn_scores (report_date, score) INCLUDE (risk_level);
