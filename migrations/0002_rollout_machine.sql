-- The never-ending rollout machine (issue 4): what the controller's reconcile passes need beyond
-- the data model of 0001.

-- There is always exactly one running cycle: when one completes, the next is created in the same
-- transaction and waits until not_before (cycleIntervalSeconds) before it plans its rollouts.
-- planned_at is null until then; plan is the effective plan it was planned with.
alter table fleetwave.cycles
  add column not_before timestamptz not null default now(),
  add column planned_at timestamptz;

-- Abort criteria count the rollout's waves from this one on: an operator who resumes a rollout a
-- gate paused accepts the failures so far, or the same failures would trip again at once.
alter table fleetwave.rollouts
  add column gate_from_wave integer not null default 1 check (gate_from_wave >= 1);

-- The rollout's devices in rollout order (canary ring first, then md5(rollout/device)), fixed
-- when the cycle plans it, in chunks of 1,000: position p is things[p % 1000 + 1] of chunk
-- p / 1000. A resumed rollout, or one taken over by another controller, queues exactly these
-- devices in exactly this order. Chunks, not a row per device, because planning a cycle over a
-- million devices must take seconds (bench/plan): a row per device with its foreign keys took
-- 30 s. A device deleted after planning is skipped when its position comes up. The order is
-- deleted when its cycle completes.
create table fleetwave.rollout_order (
  rollout_id text not null references fleetwave.rollouts (id),
  chunk      integer not null check (chunk >= 0),
  things     text[] not null check (cardinality(things) between 1 and 1000),
  primary key (rollout_id, chunk)
);

-- How many of the wave's devices have been queued so far (maxPerMinute spreads it over passes;
-- a crash between two chunks resumes at the next position).
-- health_checked_at: when the health gate last compared the groups (it looks again every
-- kHealthRecheckSeconds while inconclusive, not on every pass).
alter table fleetwave.waves
  add column health_checked_at timestamptz,
  add column queued integer not null default 0 check (queued >= 0),
  add column first_position integer not null default 0 check (first_position >= 0);

-- rollout_order, a row per device with its position and wave, for psql.
create view fleetwave.rollout_targets as
select o.rollout_id, (o.chunk * 1000 + u.i - 1)::integer as position, u.thing as thing_name,
       w.wave
from fleetwave.rollout_order o
cross join lateral unnest(o.things) with ordinality as u(thing, i)
join fleetwave.waves w on w.rollout_id = o.rollout_id
  and o.chunk * 1000 + u.i - 1 >= w.first_position
  and o.chunk * 1000 + u.i - 1 < w.first_position + w.planned;

-- A failed, rejected or timed-out execution is *settled* once the controller decided its outcome
-- (retry re-queues it; a final failure or a quarantine only marks it settled). A device update to
-- a failure status clears the mark.
alter table fleetwave.job_executions
  add column settled boolean not null default false;
create index job_executions_unsettled_idx on fleetwave.job_executions (job_id)
  where status in ('FAILED', 'REJECTED', 'TIMED_OUT') and not settled;

-- A device that failed a release maxAttemptsPerRelease times is not offered it again.
create table fleetwave.quarantines (
  thing_name text not null references fleetwave.devices (id) on delete cascade,
  release_id bigint not null references fleetwave.releases (id),
  reason     text not null,
  at         timestamptz not null default now(),
  primary key (release_id, thing_name)
);

-- Secrets the controllers share, e.g. the key that signs approval tokens (generated on first use).
create table fleetwave.secrets (
  name       text primary key,
  value      bytea not null,
  created_at timestamptz not null default now()
);
