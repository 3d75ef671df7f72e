-- Since 040 a submission numbers its tasks' 'created' events in its own statement
-- (ts_create_tasks), so nothing appends inside a caller's transaction any more: the deferred
-- tenant_seq of 030 is never asked for (store.append_events always passes
-- defer_tenant_seq = false). Its constraint trigger still had its WHEN clause evaluated for
-- every inserted event; it goes, with its function. The one-argument ts_append_events, kept
-- by 030 for old callers, has none left. (ts_pending_tenant_seq stays: the defer branch of
-- ts_append_events still names it.)
DROP TRIGGER task_events_assign_tenant_seq ON task_events;
DROP FUNCTION ts_assign_tenant_seq();
DROP FUNCTION ts_append_events(jsonb);
