-- name: trajectory_cells
-- DuckDB's fast path for trajectory_observations.sql on dense integer ids: the observations of ids in
-- [$low, $high), unsorted, each as its flat cell in a (sample, epoch) matrix,
--   cell = (sample_id - $low) * $span + (epoch - $epoch_from),
-- so that one scan writes every loss into place (analytics/mapd.py checks for repeated cells).
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive), $low (int), $high (int,
--   exclusive), $span (int: epochs in the range)
-- views: records
SELECT (sample_id - $low) * $span + (epoch - $epoch_from) AS cell, loss
FROM records
WHERE split = $split
  AND epoch >= $epoch_from
  AND epoch < $epoch_to
  AND sample_id >= $low
  AND sample_id < $high
