-- name: attempts
-- The run's attempts (one per start or restart of training) and the epochs each one owns:
-- [start_epoch, end_epoch), end_epoch = the next attempt's start_epoch (2^63 - 1 for the last).
-- parameters: none
-- views: attempts
SELECT attempt, start_epoch, end_epoch, world_size, started_at
FROM attempts
ORDER BY attempt
