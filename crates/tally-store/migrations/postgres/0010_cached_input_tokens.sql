-- The part of an LLM request's input tokens read from the provider's prompt cache, priced at the
-- model's cached-input price; kept so a re-pricing prices them the same way.
ALTER TABLE events ADD COLUMN cached_input_tokens BIGINT;
