-- Fewer writes per device request (issue 5; measured with bench/rollout, see bench/RESULTS.md).

-- A job execution is updated about five times in its life (start-next, step reports, the final
-- status). Free room on its page lets an update that changes no indexed column (a step report:
-- same status, same deadline) be a HOT update: a new row version on the same page and no new
-- entry in any of the table's five indexes. New pages keep half of their space for that.
alter table fleetwave.job_executions set (fillfactor = 50);

-- The outbox is a queue of notices still to be delivered: a notice the broker acknowledged is
-- deleted (until now it was marked sent and kept: four rows per device and rollout, growing
-- without end, that nothing read). `sent_at` stays for notices marked by older controllers.
grant delete on fleetwave.outbox to fleetwave_app;
delete from fleetwave.outbox where sent_at is not null;
-- With delivered notices gone, every row is unsent: the partial index of unsent notices was a
-- second copy of the primary key, written for every notice.
drop index fleetwave.outbox_unsent_idx;
