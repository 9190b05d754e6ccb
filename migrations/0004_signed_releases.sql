-- Signed releases (issue 7): the release key signs a manifest (model, version, counter, url,
-- sha256, size); the row keeps the counter and the signature so every rollout's job document
-- carries them to the devices, which verify both before installing anything.

-- The ordering counter of the signed manifest: a device refuses a manifest whose counter is not
-- above the one of the release it runs (anti-rollback that does not trust the version text).
-- Releases registered before signing existed have 0.
alter table fleetwave.releases
  add column counter bigint not null default 0 check (counter >= 0);

-- The signature column existed unused since 0001; from now on it is the release key's signature
-- {"alg": "ed25519", "keyId": <16 hex>, "value": <88 base64>} or null for an unsigned release.
alter table fleetwave.releases
  add constraint releases_signature_form check (
    signature is null or (
      jsonb_typeof(signature) = 'object'
      and signature ->> 'alg' = 'ed25519'
      and coalesce(signature ->> 'keyId', '') ~ '^[0-9a-f]{16}$'
      and coalesce(signature ->> 'value', '') ~ '^[A-Za-z0-9+/]{86}==$'));
