-- name: trajectory_observations
-- Every observation's loss in $split, epochs [$epoch_from, $epoch_to), sorted by sample_id: what MAP-D
-- trajectories are made of (per sample and epoch the mean loss, missed epochs forward-filled; see
-- analytics/mapd.py). $low, $high keep integer ids in [$low, $high) (NULL: every id).
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive), $low (int or NULL),
--   $high (int or NULL, exclusive)
-- views: records
SELECT sample_id, epoch, loss
FROM records
WHERE split = $split
  AND epoch >= $epoch_from
  AND epoch < $epoch_to
  AND ($low IS NULL OR sample_id >= $low)
  AND ($high IS NULL OR sample_id < $high)
ORDER BY sample_id
