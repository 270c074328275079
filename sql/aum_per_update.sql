-- name: aum_per_update
-- AUM as the `aum` package computes it (Pleiss et al. 2020, reference code) per sample:
--   aum = mean over every recorded observation (forward pass) in [$epoch_from, $epoch_to) of the margin
--   z_y - max_{j != y} z_j; a sample seen twice in one epoch counts twice.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive)
-- views: records
SELECT
    r.sample_id,
    avg(r.margin) AS aum,
    count(*) AS updates
FROM records AS r
WHERE r.split = $split
  AND r.epoch >= $epoch_from
  AND r.epoch < $epoch_to
GROUP BY r.sample_id
