-- name: probe_observations
-- trajectory_observations.sql for the reference probes only (samples with probe_role = 'reference'):
-- every observation's loss in $split, epochs [$epoch_from, $epoch_to), sorted by sample_id.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive)
-- views: records, samples
SELECT sample_id, epoch, loss
FROM records
WHERE split = $split
  AND epoch >= $epoch_from
  AND epoch < $epoch_to
  AND sample_id IN (SELECT sample_id FROM samples WHERE probe IS NOT NULL AND probe_role = 'reference')
ORDER BY sample_id
