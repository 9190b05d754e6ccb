-- Database roles (issue 7): the schema belongs to the role that runs `fleetwave migrate` (the
-- owner); the controller, the watchdog and the CLI connect with a login role that is a member of
-- the NOLOGIN group role fleetwave_app, which gets only the rights their SQL needs: no DDL, no
-- TRUNCATE, no ownership, and on the append-only and insert-only tables not even UPDATE/DELETE.
--
-- Roles are global to the cluster, so this migration cannot simply create one: an operator's
-- owner role usually lacks CREATEROLE (and should: in PostgreSQL 15 CREATEROLE is close to
-- superuser). It creates fleetwave_app only when it is missing and the owner may create roles;
-- otherwise it stops, changing nothing, with the one line a superuser must run first.
-- scripts/stack creates the role itself, so its owner needs no CREATEROLE.
do $$
begin
  if not exists (select from pg_roles where rolname = 'fleetwave_app') then
    if exists (select from pg_roles where rolname = current_user and (rolsuper or rolcreaterole)) then
      create role fleetwave_app nologin;
    else
      raise exception using
        errcode = 'insufficient_privilege',
        message = format('the group role fleetwave_app does not exist and %I may not create '
                         'roles: as a superuser run  CREATE ROLE fleetwave_app NOLOGIN;  then '
                         'run fleetwave migrate again', current_user);
    end if;
  end if;
end $$;

-- Nobody but the owner and fleetwave_app uses the schema; the defaults already give PUBLIC
-- nothing on it or its tables, but a schema made by hand may have granted more.
revoke all on schema fleetwave from public;
grant usage on schema fleetwave to fleetwave_app;

-- Reading: every table and view.
grant select on all tables in schema fleetwave to fleetwave_app;

-- Writing, table by table, as the SQL of db/ needs it (tests/db/roles_test.cc runs it as
-- this role, and the integration tests run the controller and the CLI with it):
grant insert, update on
  fleetwave.devices,         -- device add/import; last_seen, firmware after SUCCEEDED, flags
  fleetwave.releases,        -- release add, halt/resume, halted by an aborted rollout
  fleetwave.cycles,          -- the cycle machine, heartbeat
  fleetwave.rollouts,
  fleetwave.waves,
  fleetwave.job_executions,  -- the jobs API and the reconcile passes
  fleetwave.outbox,          -- notices, marked sent by the relay
  fleetwave.leases,          -- the leader lease (select ... for update needs UPDATE)
  fleetwave.approvals
  to fleetwave_app;
-- Append-only history: the trigger of 0001 refuses UPDATE/DELETE even to the owner; the
-- application role does not get the right in the first place.
grant insert on fleetwave.events to fleetwave_app;
-- Written once, never changed.
grant insert on fleetwave.quarantines, fleetwave.secrets to fleetwave_app;
-- Deleted, never updated: telemetry by its retention, a completed cycle's rollout order.
grant insert, delete on fleetwave.telemetry, fleetwave.rollout_order to fleetwave_app;
-- schema_migrations: read only (`fleetwave migrate --status` works as either role).

-- Identity columns draw from sequences; EXECUTE for functions (the events trigger's).
grant usage, select on all sequences in schema fleetwave to fleetwave_app;
grant execute on all functions in schema fleetwave to fleetwave_app;

-- Tables, sequences and functions that later migrations create (run by this same owner) get
-- the broad rights; a later migration that wants narrower ones for its table (an append-only
-- log, an insert-only table) revokes them explicitly, as the grants above do for 0001–0003.
alter default privileges in schema fleetwave
  grant select, insert, update, delete on tables to fleetwave_app;
alter default privileges in schema fleetwave
  grant usage, select on sequences to fleetwave_app;
alter default privileges in schema fleetwave
  grant execute on functions to fleetwave_app;
