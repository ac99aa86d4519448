-- A user's LLM request history, newest first, with cursor paging deep into long histories: a
-- partial index, so other events pay nothing for it.
CREATE INDEX events_llm_by_user ON events (organization_id, user_id, ts) WHERE usage_type = 'llm_request';
