-- Rows of these tables live for milliseconds: vacuum them after a thousand dead rows
-- whatever their size, without throttling, so scans never wade through dead pages.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                        autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0,
                        autovacuum_analyze_threshold = 1000);
ALTER TABLE timers SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                        autovacuum_vacuum_cost_delay = 0);
ALTER TABLE command_acks SET (autovacuum_vacuum_scale_factor = 0,
                              autovacuum_vacuum_threshold = 1000,
                              autovacuum_vacuum_cost_delay = 0);
