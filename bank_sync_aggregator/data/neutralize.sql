-- A copied database must never reach the real aggregators with the production credentials:
-- its real bank connections stop (their history stays), every secret and cached token is
-- forgotten, and the companies fall back to the built-in sandbox.
UPDATE bank_sync_connection AS connection
   SET state = 'disconnected'
  FROM bank_sync_provider AS provider
 WHERE connection.provider_id = provider.id
   AND provider.kind != 'sandbox';
UPDATE bank_sync_provider
   SET client_id = NULL,
       client_secret_encrypted = NULL,
       webhook_secrets_encrypted = NULL,
       service_secret_encrypted = NULL,
       webhook_token = NULL,
       base_url = NULL,
       name = 'Sandbox (demo)',
       kind = 'sandbox',
       environment = 'sandbox';
DELETE FROM bank_sync_token;
