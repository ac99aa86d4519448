-- A churn row's details are stored and read whole, never queried inside, and a day's report
-- writes one for every subscriber. As `jsonb` each of their 24 numbers was converted to
-- `numeric` on the way in: measured on 200,000 rows, that conversion was a third of the time
-- the rows took to write, and the rows took 60% more room than as text, which is how `json`
-- keeps them (it checks the text and stores it as it is).
ALTER TABLE churn_scores ALTER COLUMN details TYPE json USING details::json;
