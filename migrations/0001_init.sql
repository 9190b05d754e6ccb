-- fleetwave schema (DESIGN §3). PostgreSQL is the source of truth; states are lowercase text
-- except job executions, which use the AWS IoT Jobs statuses. Version columns come with a
-- *_key column (fleet::Version::SortKey) whose byte order is semantic-version precedence.

create table fleetwave.devices (
  id                text primary key check (id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
  model             text not null check (model ~ '^[A-Za-z0-9_.-]{1,64}$'),
  firmware          text not null,
  firmware_key      text collate "C" not null,
  ring              text not null default 'default' check (ring ~ '^[A-Za-z0-9_.-]{1,64}$'),
  attributes        jsonb not null default '{}' check (jsonb_typeof(attributes) = 'object'),
  last_seen         timestamptz,
  quarantined       boolean not null default false,
  quarantine_reason text,
  flagged_at        timestamptz,            -- set when a device reports something inconsistent
  flag_reason       text,
  created_at        timestamptz not null default now(),
  updated_at        timestamptz not null default now()
);
-- A cycle asks, per model, for devices behind a release: (model, firmware_key) serves that.
create index devices_model_firmware_idx on fleetwave.devices (model, firmware_key)
  where not quarantined;
create index devices_model_ring_idx on fleetwave.devices (model, ring);

create table fleetwave.releases (
  id          bigint generated always as identity primary key,  -- publication order
  model       text not null check (model ~ '^[A-Za-z0-9_.-]{1,64}$'),
  version     text not null,
  version_key text collate "C" not null,
  url         text not null check (url ~ '^https?://[^/\s]'),
  sha256      text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  size        bigint not null check (size > 0),
  state       text not null default 'active' check (state in ('active', 'halted', 'retired')),
  signature   jsonb,                        -- the release key's signature of the manifest
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  unique (model, version)
);
create index releases_active_idx on fleetwave.releases (model, version_key desc)
  where state = 'active';

-- One row per execution of the never-ending machine; at most one may be running.
create table fleetwave.cycles (
  id           bigint generated always as identity primary key,
  state        text not null default 'running' check (state in ('running', 'completed')),
  leader_epoch bigint not null default 0,
  plan         jsonb not null default '{}',
  started_at   timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  finished_at  timestamptz,
  check ((state = 'completed') = (finished_at is not null))
);
create unique index cycles_one_running_idx on fleetwave.cycles ((true)) where state = 'running';

-- One rollout per release per cycle; it is the job devices see (job id = rollout id).
create table fleetwave.rollouts (
  id           text primary key check (id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
  cycle_id     bigint not null references fleetwave.cycles (id),
  release_id   bigint not null references fleetwave.releases (id),
  state        text not null default 'running' check (state in
                 ('running', 'awaiting_approval', 'paused', 'completed', 'aborted', 'superseded')),
  current_wave integer not null default 0 check (current_wave >= 0),
  total        integer not null default 0 check (total >= 0),  -- devices targeted
  plan         jsonb not null default '{}',
  -- The job document devices receive, less the per-execution fields (rollout.wave, issuedAt,
  -- expiresAt) that are added when it is read.
  job_document jsonb not null default '{}' check (jsonb_typeof(job_document) = 'object'),
  reason       text,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now(),
  finished_at  timestamptz,
  unique (cycle_id, release_id)
);
create index rollouts_release_idx on fleetwave.rollouts (release_id);
create index rollouts_active_idx on fleetwave.rollouts (cycle_id)
  where state in ('running', 'awaiting_approval', 'paused');

create table fleetwave.waves (
  rollout_id       text not null references fleetwave.rollouts (id),
  wave             integer not null check (wave >= 1),
  planned          integer not null check (planned >= 0),  -- devices in this wave
  state            text not null default 'pending' check (state in
                     ('pending', 'running', 'soaking', 'passed', 'failed', 'canceled')),
  verdict          text check (verdict in ('passed', 'passed_with_failures', 'failed')),
  started_at       timestamptz,
  threshold_met_at timestamptz,
  finished_at      timestamptz,
  primary key (rollout_id, wave),
  check ((verdict is null) or state in ('passed', 'failed'))
);

create table fleetwave.job_executions (
  job_id            text not null references fleetwave.rollouts (id),
  thing_name        text not null references fleetwave.devices (id),
  status            text not null default 'QUEUED' check (status in ('QUEUED', 'IN_PROGRESS',
                      'SUCCEEDED', 'FAILED', 'REJECTED', 'TIMED_OUT', 'CANCELED', 'REMOVED')),
  status_details    jsonb not null default '{}' check (jsonb_typeof(status_details) = 'object'),
  version_number    bigint not null default 1 check (version_number >= 1),
  execution_number  bigint not null default 1 check (execution_number >= 1),
  wave              integer not null check (wave >= 1),
  attempts          integer not null default 1 check (attempts >= 1),
  queued_at         timestamptz not null default now(),
  started_at        timestamptz,
  last_updated_at   timestamptz not null default now(),
  deadline          timestamptz,           -- when QUEUED/IN_PROGRESS turns TIMED_OUT
  step_timeout_at   timestamptz,           -- stepTimeoutInMinutes from the device
  last_client_token text,                  -- a retried update with this token is answered again
  last_answer       jsonb,
  primary key (job_id, thing_name)
);
-- A device asks for its pending executions, oldest first.
create index job_executions_pending_idx on fleetwave.job_executions (thing_name, queued_at)
  where status in ('QUEUED', 'IN_PROGRESS');
-- Gates count a wave's executions by status.
create index job_executions_wave_idx on fleetwave.job_executions (job_id, wave, status);
create index job_executions_deadline_idx on fleetwave.job_executions (deadline)
  where status in ('QUEUED', 'IN_PROGRESS');

-- Notices written with the change that caused them; a relay publishes and marks them sent.
create table fleetwave.outbox (
  id         bigint generated always as identity primary key,
  topic      text not null,
  payload    text not null,
  created_at timestamptz not null default now(),
  sent_at    timestamptz,
  attempts   integer not null default 0
);
create index outbox_unsent_idx on fleetwave.outbox (id) where sent_at is null;

-- Health reports; retention is bounded by deleting by received_at.
create table fleetwave.telemetry (
  id          bigint generated always as identity primary key,
  thing_name  text not null references fleetwave.devices (id) on delete cascade,
  received_at timestamptz not null default now(),
  firmware    text,
  payload     jsonb not null check (jsonb_typeof(payload) = 'object')
);
create index telemetry_thing_idx on fleetwave.telemetry (thing_name, received_at);
create index telemetry_received_idx on fleetwave.telemetry (received_at);

-- Append-only history: every state change of a cycle, rollout or wave, written in the same
-- transaction as the change.
create table fleetwave.events (
  id         bigint generated always as identity primary key,
  at         timestamptz not null default now(),
  cycle_id   bigint references fleetwave.cycles (id),
  rollout_id text references fleetwave.rollouts (id),
  wave       integer,
  kind       text not null,
  from_state text,
  to_state   text,
  detail     jsonb not null default '{}'
);
create index events_cycle_idx on fleetwave.events (cycle_id, id);
create index events_rollout_idx on fleetwave.events (rollout_id, id);

create function fleetwave.events_append_only() returns trigger language plpgsql as $$
begin
  raise exception 'fleetwave.events is append-only';
end $$;
create trigger events_append_only before update or delete on fleetwave.events
  for each row execute function fleetwave.events_append_only();

-- Leader leases: expiry by the database clock; every leader write is fenced by the epoch.
create table fleetwave.leases (
  name         text primary key,
  holder       text not null,
  epoch        bigint not null default 1 check (epoch >= 1),
  acquired_at  timestamptz not null default now(),
  expires_at   timestamptz not null,
  heartbeat_at timestamptz not null default now()
);

create table fleetwave.approvals (
  id          bigint generated always as identity primary key,
  rollout_id  text not null references fleetwave.rollouts (id),
  wave        integer not null check (wave >= 1),
  token_hash  text not null unique,        -- only the hash of the one-use token is stored
  state       text not null default 'pending' check (state in
                ('pending', 'approved', 'denied', 'expired')),
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  decided_at  timestamptz,
  decided_by  text
);
create unique index approvals_one_pending_idx on fleetwave.approvals (rollout_id, wave)
  where state = 'pending';

-- Views for people who query with psql.
create view fleetwave.rollout_status as
select r.id as rollout_id, r.cycle_id, rel.model, rel.version, r.state, r.current_wave, r.total,
       count(*) filter (where e.status = 'QUEUED')      as queued,
       count(*) filter (where e.status = 'IN_PROGRESS') as in_progress,
       count(*) filter (where e.status = 'SUCCEEDED')   as succeeded,
       count(*) filter (where e.status = 'FAILED')      as failed,
       count(*) filter (where e.status = 'REJECTED')    as rejected,
       count(*) filter (where e.status = 'TIMED_OUT')   as timed_out,
       count(*) filter (where e.status = 'CANCELED')    as canceled
from fleetwave.rollouts r
join fleetwave.releases rel on rel.id = r.release_id
left join fleetwave.job_executions e on e.job_id = r.id
group by r.id, rel.model, rel.version;

create view fleetwave.wave_status as
select w.rollout_id, w.wave, w.planned, w.state,
       count(e.status) filter (where e.status = 'QUEUED')      as queued,
       count(e.status) filter (where e.status = 'IN_PROGRESS') as in_progress,
       count(e.status) filter (where e.status = 'SUCCEEDED')   as succeeded,
       count(e.status) filter (where e.status = 'FAILED')      as failed,
       count(e.status) filter (where e.status = 'REJECTED')    as rejected,
       count(e.status) filter (where e.status = 'TIMED_OUT')   as timed_out,
       count(e.status) filter (where e.status = 'CANCELED')    as canceled,
       w.started_at, w.finished_at, w.verdict
from fleetwave.waves w
left join fleetwave.job_executions e on e.job_id = w.rollout_id and e.wave = w.wave
group by w.rollout_id, w.wave;

create view fleetwave.fleet_versions as
select model, firmware, count(*) as devices
from fleetwave.devices
group by model, firmware;
