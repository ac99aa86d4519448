-- A user's LLM request history, newest first, with cursor paging deep into long histories: a
-- partial index, so other events pay nothing for it.
CREATE INDEX events_llm_by_user ON events (organization_id, user_id, ts) WHERE usage_type = 'llm_request';
-- The latest LLM requests across users (recent activity).
CREATE INDEX events_llm_by_time ON events (ts) WHERE usage_type = 'llm_request';
