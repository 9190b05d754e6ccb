-- Operating fleetwave (issue 6): what `fleetwave status`, the HTTP API and the console read.

-- An approval's links can be shown again (by `fleetwave status`, the API and the console), not
-- only logged when it was requested: the row keeps the token's nonce and the base URL it was
-- issued for. The token is HMAC(secret 'approval-hmac', rollout/wave/expiry/nonce), so whoever
-- can read fleetwave.secrets can rebuild it; the row alone (token_hash, nonce) cannot.
alter table fleetwave.approvals
  add column nonce    text,
  add column base_url text;

