-- name: attempts
-- The run's attempts (one per start or restart of training): start_epoch = the earliest epoch it starts
-- in, end_epoch = the next attempt's start_epoch (2^63 - 1 for the last). Which rows each one owns is
-- decided per split and (epoch, step) from the attempt files (FORMAT.md, "Attempts"; the records view).
-- parameters: none
-- views: attempts
SELECT attempt, start_epoch, end_epoch, world_size, started_at
FROM attempts
ORDER BY attempt
